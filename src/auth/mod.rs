//! Authentication: JWTs into an [`Identity`] for sockets, API keys into a [`Caller`] for HTTP.

pub mod api_key;
pub mod jwks;
pub mod jwt;

/// Defined with the room policy that reads it ([`crate::rooms`] imports nothing of `auth`).
pub use crate::rooms::Identity;
pub use api_key::{ApiKeys, Caller};
pub use jwks::Jwks;
pub use jwt::{AuthError, JwtVerifier, TokenClaims};
