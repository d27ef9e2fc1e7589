//! Authentication: JWTs into an [`Identity`] for sockets, API keys into a [`Caller`] for HTTP.

pub mod api_key;
pub mod jwks;
pub mod jwt;

pub use api_key::{ApiKeys, Caller};
pub use jwks::Jwks;
pub use jwt::{AuthError, Identity, JwtVerifier, TokenClaims};
