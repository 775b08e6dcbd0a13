//! What the front door decides with, free of HTTP: the immutable routing snapshot, the
//! traffic split and the credentials. The `/score` handler that ties them together is
//! `server::front_door`.
#![forbid(unsafe_code)]

pub(crate) mod auth;
pub(crate) mod routing;
pub(crate) mod split;

pub use auth::Credentials;
pub(crate) use routing::{EndpointView, RoutingTable, Unavailable};
pub use split::WeightedSplit;
