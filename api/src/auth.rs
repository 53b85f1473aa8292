//! Who is calling: gateway headers or a JWT, checked before any protected handler runs.
//! A request without a believable identity gets 401 and reaches no handler.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::settings::{ApiConfig, AuthConfig, JwtConfig};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deployguard::audit::Actor;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;

use crate::AppState;
use crate::error::ApiError;

pub const USER_HEADER: &str = "x-user-id";
pub const ROLES_HEADER: &str = "x-user-roles";
pub const GATEWAY_TOKEN_HEADER: &str = "x-gateway-token";

/// The authenticated caller, with where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub admin: bool,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Caller {
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            user_id: &self.user_id,
            client_ip: self.client_ip,
            user_agent: self.user_agent.as_deref(),
        }
    }

    /// The owner filter for job queries: admins see every job.
    pub fn owner_filter(&self) -> Option<&str> {
        (!self.admin).then_some(self.user_id.as_str())
    }
}

/// Where the request came from, known even when authentication fails.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The identity checker built from configuration (keys parsed once, at start).
pub enum Authenticator {
    Gateway {
        token: Option<secrecy::SecretString>,
    },
    Jwt(Box<JwtKeys>),
}

pub struct JwtKeys {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    config: JwtConfig,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        Ok(match config {
            AuthConfig::Gateway { token } => Self::Gateway {
                token: token.clone(),
            },
            AuthConfig::Jwt(jwt) => Self::Jwt(Box::new(JwtKeys {
                hs256: jwt
                    .hs256_secret
                    .as_ref()
                    .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
                rs256: match &jwt.rs256_public_key_pem {
                    Some(pem) => Some(DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                        anyhow::anyhow!("JWT_RS256_PUBLIC_KEY is not an RSA public key in PEM: {e}")
                    })?),
                    None => None,
                },
                config: jwt.clone(),
            })),
        })
    }

    /// The user id and roles of a request.
    fn identify(&self, headers: &HeaderMap) -> Result<(String, Vec<String>), ApiError> {
        match self {
            Self::Gateway { token } => {
                if let Some(expected) = token {
                    let given = headers
                        .get(GATEWAY_TOKEN_HEADER)
                        .map(|v| v.as_bytes())
                        .unwrap_or_default();
                    if !constant_time_eq(given, expected.expose_secret().as_bytes()) {
                        return Err(ApiError::unauthorized(
                            "the request did not come through the authentication gateway",
                        ));
                    }
                }
                let user = headers
                    .get(USER_HEADER)
                    .ok_or_else(|| {
                        ApiError::unauthorized("no identity: the X-User-ID header is missing")
                    })?
                    .to_str()
                    .map_err(|_| ApiError::unauthorized("X-User-ID must be visible ASCII"))?;
                let roles = headers
                    .get(ROLES_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(split_roles)
                    .unwrap_or_default();
                Ok((user.trim().to_owned(), roles))
            }
            Self::Jwt(keys) => {
                let JwtKeys {
                    hs256,
                    rs256,
                    config,
                } = keys.as_ref();
                let token = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .ok_or_else(|| {
                        ApiError::unauthorized("no identity: send Authorization: Bearer <JWT>")
                    })?;
                let bad = || ApiError::unauthorized("the bearer token is not valid");
                let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
                let key = match header.alg {
                    Algorithm::HS256 => hs256.as_ref(),
                    Algorithm::RS256 => rs256.as_ref(),
                    _ => None,
                }
                .ok_or_else(bad)?;
                let mut validation = Validation::new(header.alg);
                validation.leeway = 30;
                validation.validate_nbf = true;
                validation.set_required_spec_claims(&["exp", "sub"]);
                if let Some(issuer) = &config.issuer {
                    validation.set_issuer(&[issuer]);
                }
                match &config.audience {
                    Some(audience) => validation.set_audience(&[audience]),
                    None => return Err(bad()),
                }
                let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
                    .map_err(|e| {
                        let why = match e.kind() {
                            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                                "the bearer token has expired"
                            }
                            _ => "the bearer token is not valid",
                        };
                        ApiError::unauthorized(why)
                    })?
                    .claims;
                let user = claims
                    .get("sub")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(bad)?;
                let roles = match claims.get(&config.roles_claim) {
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect(),
                    Some(serde_json::Value::String(s)) => split_roles(s),
                    _ => Vec::new(),
                };
                Ok((user.trim().to_owned(), roles))
            }
        }
    }
}

fn split_roles(raw: &str) -> Vec<String> {
    raw.split([',', ' '])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_user_id(user: &str) -> bool {
    (1..=255).contains(&user.chars().count()) && !user.chars().any(char::is_control)
}

/// The client address: the peer, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not one of ours.
pub fn client_ip(config: &ApiConfig, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?;
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_forwarded(s.trim()))
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(forwarded.first())
        .copied()
        .or(Some(peer))
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[::1]:5678`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Records where a request came from (every request, also unauthenticated ones).
pub async fn origin(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let origin = Origin {
        client_ip: client_ip(&state.api, peer, req.headers()),
        user_agent: req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
    };
    req.extensions_mut().insert(origin);
    next.run(req).await
}

/// Requires an identity; puts the [`Caller`] into the request.
pub async fn require_identity(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let (user_id, roles) = match state.auth.identify(req.headers()) {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    if !valid_user_id(&user_id) {
        return ApiError::unauthorized(
            "the user id must be 1 to 255 characters without control characters",
        )
        .into_response();
    }
    let origin = req.extensions().get::<Origin>().cloned();
    let caller = Caller {
        admin: roles.iter().any(|r| *r == state.api.admin_role),
        user_id,
        client_ip: origin.as_ref().and_then(|o| o.client_ip),
        user_agent: origin.and_then(|o| o.user_agent),
    };
    req.extensions_mut().insert(Arc::new(caller));
    next.run(req).await
}

/// Requires the admin role (after [`require_identity`]).
pub async fn require_admin(req: Request, next: Next) -> Response {
    let admin = req
        .extensions()
        .get::<Arc<Caller>>()
        .is_some_and(|c| c.admin);
    if !admin {
        return ApiError::forbidden("this endpoint is for administrators").into_response();
    }
    next.run(req).await
}
