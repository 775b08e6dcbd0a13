//! The front door: the immutable routing snapshot, the traffic split, auth, and the `/score`
//! handler that ties them together.

pub mod auth;
pub mod body;
pub mod front_door;
pub mod routing;
pub mod split;

pub use auth::Credentials;
pub use routing::{EndpointView, RoutingTable};
pub use split::WeightedSplit;
