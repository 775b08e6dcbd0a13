//! What the front door decides with, free of HTTP: the immutable routing snapshot, the
//! traffic split and the credentials. The `/score` handler that ties them together is
//! `server::front_door`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod routing;
pub mod split;

pub use auth::Credentials;
pub use routing::{EndpointView, RoutingTable, Unavailable};
pub use split::WeightedSplit;
