//! Who is calling: JWT bearer tokens verified before any handler runs (so before any database
//! work), turned into a [`Caller`] that handlers read from the request's extensions.
//!
//! A token is signed with EdDSA (Ed25519) or RS256 by whoever issues them; the services hold only
//! the public key. Checked: the signature, the algorithm (only the one the key is for, so
//! `alg: none` and HS256-with-the-public-key are refused), `exp` (and `nbf` when present), `iss`,
//! `aud` and `sub`. The claims that matter here:
//!
//! - `tenant`: the tenant every CommandService and QueryService call acts for. It is the only
//!   source of the tenant while authentication is on; the `x-tenant-id` header is ignored.
//! - `roles`: [`ADMIN`] for ProjectionAdminService, [`EVENT_READER`] for reading the whole event
//!   log across tenants (query-svc's own token for rebuilds and hole filling).
//!
//! Authentication can be turned off only explicitly (`AUTH_DISABLED=true`, for local use): every
//! call is then an anonymous caller with every role, naming its tenant with `x-tenant-id`.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::values::TenantId;

/// May manage projections: rebuild, dead letters.
pub const ADMIN: &str = "admin";
/// May read the event log of every tenant (a service role: query-svc's token).
pub const EVENT_READER: &str = "event-reader";

/// Header naming the tenant while authentication is off, and the tenant whose stream an
/// [`EVENT_READER`] without a tenant claim reads.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// Tenant of calls that name none while authentication is off.
pub const DEFAULT_TENANT: TenantId = TenantId::from_uuid(uuid::Uuid::nil());

/// The verified caller of one gRPC call, put in the request's extensions by the admission gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`, for logs and event metadata.
    pub subject: String,
    tenant: Option<TenantId>,
    roles: Vec<String>,
}

impl Caller {
    /// The tenant the call acts for; PERMISSION_DENIED for a token that names none (a service
    /// token), which may not call tenant-scoped rpcs.
    pub fn tenant(&self) -> Result<TenantId, Status> {
        self.tenant
            .ok_or_else(|| Status::permission_denied("the token names no tenant"))
    }

    /// The tenant claim, if the token has one.
    pub fn tenant_claim(&self) -> Option<TenantId> {
        self.tenant
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// PERMISSION_DENIED unless the caller holds `role`.
    pub fn require(&self, role: &str) -> Result<(), Status> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this rpc needs the {role:?} role"
            )))
        }
    }
}

/// How calls are authenticated.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// Local use only: no token, tenant from `x-tenant-id`, every role.
    Disabled,
    Jwt(Arc<JwtVerifier>),
}

impl Authentication {
    /// The caller of a call with these headers, or the status refusing it.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        match self {
            Authentication::Disabled => Ok(Caller {
                subject: "anonymous".to_owned(),
                tenant: Some(tenant_header(headers)?.unwrap_or(DEFAULT_TENANT)),
                roles: vec![ADMIN.to_owned(), EVENT_READER.to_owned()],
            }),
            Authentication::Jwt(verifier) => {
                let header = headers
                    .get(http::header::AUTHORIZATION)
                    .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
                let token = header
                    .to_str()
                    .ok()
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        Status::unauthenticated("authorization must be \"Bearer <token>\"")
                    })?;
                verifier.verify(token.trim())
            }
        }
    }
}

/// The `x-tenant-id` header: None when absent, INVALID_ARGUMENT when not a UUID.
pub fn tenant_header(headers: &http::HeaderMap) -> Result<Option<TenantId>, Status> {
    match headers.get(TENANT_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|raw| TenantId::parse(raw).ok())
            .map(Some)
            .ok_or_else(|| Status::invalid_argument(format!("{TENANT_HEADER} must be a UUID"))),
    }
}

/// The claims a token must carry beyond `exp`, `iss` and `aud` (checked by the library).
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Checks bearer tokens against one public key, issuer and audience.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for tokens signed by the private half of `public_key_pem`: an Ed25519 key
    /// means EdDSA, an RSA key RS256; no other algorithm is accepted.
    pub fn from_public_pem(
        public_key_pem: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, String> {
        let (key, algorithm) = DecodingKey::from_ed_pem(public_key_pem)
            .map(|key| (key, Algorithm::EdDSA))
            .or_else(|_| {
                DecodingKey::from_rsa_pem(public_key_pem).map(|key| (key, Algorithm::RS256))
            })
            .map_err(|_| {
                "the public key is neither an Ed25519 nor an RSA public key in PEM".to_owned()
            })?;
        if issuer.is_empty() || audience.is_empty() {
            return Err("the token issuer and audience must not be empty".to_owned());
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Self { key, validation })
    }

    /// The caller a token proves, or UNAUTHENTICATED saying why not (never echoing the token).
    pub fn verify(&self, token: &str) -> Result<Caller, Status> {
        let claims = jsonwebtoken::decode::<VerifiedClaims>(token, &self.key, &self.validation)
            .map_err(|error| Status::unauthenticated(refusal(error.kind())))?
            .claims;
        let tenant = claims
            .tenant
            .map(|raw| {
                TenantId::parse(&raw)
                    .map_err(|_| Status::unauthenticated("the token's tenant claim is not a UUID"))
            })
            .transpose()?;
        Ok(Caller {
            subject: claims.sub,
            tenant,
            roles: claims.roles,
        })
    }
}

fn refusal(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "token from the wrong issuer",
        ErrorKind::InvalidAudience => "token for another audience",
        ErrorKind::InvalidSignature => "token signature does not verify",
        ErrorKind::InvalidAlgorithm => {
            "token signed with an algorithm this service does not accept"
        }
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (exp, iss, aud, sub)",
        _ => "malformed token",
    }
}

/// What to put in a token minted by [`mint`].
#[derive(Debug, Clone, Serialize)]
pub struct TokenClaims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    /// Seconds since the epoch.
    pub iat: u64,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl TokenClaims {
    /// Claims valid from now for `ttl`.
    pub fn new(
        subject: &str,
        issuer: &str,
        audience: &str,
        tenant: Option<TenantId>,
        roles: &[&str],
        ttl: Duration,
    ) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Self {
            sub: subject.to_owned(),
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            tenant: tenant.map(|tenant| tenant.to_string()),
            roles: roles.iter().map(|role| (*role).to_owned()).collect(),
        }
    }
}

/// Signs `claims` with a PKCS#8 PEM private key (Ed25519 → EdDSA, RSA → RS256). For local
/// tokens and tests; production tokens come from the identity provider.
pub fn mint(private_key_pem: &[u8], claims: &TokenClaims) -> Result<String, String> {
    let (key, algorithm) = EncodingKey::from_ed_pem(private_key_pem)
        .map(|key| (key, Algorithm::EdDSA))
        .or_else(|_| EncodingKey::from_rsa_pem(private_key_pem).map(|key| (key, Algorithm::RS256)))
        .map_err(|_| "the private key is neither an Ed25519 nor an RSA key in PEM".to_owned())?;
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).map_err(|error| error.to_string())
}

/// Authentication settings, the same for both services.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// Accept calls without a token, tenant from the x-tenant-id header. For local use only.
    #[arg(long = "auth-disabled", env = "AUTH_DISABLED", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub disabled: bool,

    /// PEM public key that verifies bearer tokens: Ed25519 (EdDSA) or RSA (RS256).
    #[arg(long = "auth-public-key-file", env = "AUTH_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<PathBuf>,

    /// The `iss` every token must carry.
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER", default_value = "pizzeria")]
    pub issuer: String,

    /// The `aud` every token must carry.
    #[arg(
        long = "auth-audience",
        env = "AUTH_AUDIENCE",
        default_value = "pizzeria"
    )]
    pub audience: String,
}

impl AuthConfig {
    /// The configured authentication; an error (the process refuses to start) unless exactly
    /// one of a public key and `AUTH_DISABLED=true` is given.
    pub fn authentication(&self) -> anyhow::Result<Authentication> {
        match (&self.public_key_file, self.disabled) {
            (None, false) => anyhow::bail!(
                "no AUTH_PUBLIC_KEY_FILE to verify tokens with; set one, or AUTH_DISABLED=true for local use"
            ),
            (Some(_), true) => {
                anyhow::bail!("AUTH_PUBLIC_KEY_FILE and AUTH_DISABLED=true contradict each other")
            }
            (None, true) => {
                tracing::warn!("authentication is disabled: any caller may act for any tenant");
                Ok(Authentication::Disabled)
            }
            (Some(path), false) => {
                let pem = std::fs::read(path).map_err(|error| {
                    anyhow::anyhow!(
                        "cannot read AUTH_PUBLIC_KEY_FILE {}: {error}",
                        path.display()
                    )
                })?;
                let verifier = JwtVerifier::from_public_pem(&pem, &self.issuer, &self.audience)
                    .map_err(|error| {
                        anyhow::anyhow!("AUTH_PUBLIC_KEY_FILE {}: {error}", path.display())
                    })?;
                Ok(Authentication::Jwt(Arc::new(verifier)))
            }
        }
    }
}

/// Adds `authorization: Bearer <token>` to a client's calls, the token read from a file on every
/// call (so a mounted, rotated secret is picked up). No file: calls go out without a token (the
/// server has authentication off).
#[derive(Debug, Clone, Default)]
pub struct ServiceToken {
    file: Option<PathBuf>,
}

impl ServiceToken {
    pub fn from_file(file: Option<PathBuf>) -> Self {
        Self { file }
    }
}

impl tonic::service::Interceptor for ServiceToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(path) = &self.file else {
            return Ok(request);
        };
        let token = std::fs::read_to_string(path).map_err(|error| {
            tracing::error!(path = %path.display(), %error, "cannot read the service token");
            Status::unauthenticated("service token file unreadable")
        })?;
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| Status::unauthenticated("service token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine;

    use super::*;

    const PRIVATE: &[u8] = include_bytes!("../testdata/test-ed25519.pem");
    const PUBLIC: &[u8] = include_bytes!("../testdata/test-ed25519.pub.pem");
    const OTHER_PRIVATE: &[u8] = include_bytes!("../testdata/other-ed25519.pem");
    const RSA_PRIVATE: &[u8] = include_bytes!("../testdata/test-rsa.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../testdata/test-rsa.pub.pem");

    fn tenant() -> TenantId {
        TenantId::parse("0190b8f6-aaaa-7000-8000-000000000001").unwrap()
    }

    fn claims() -> TokenClaims {
        TokenClaims::new(
            "alice",
            "pizzeria",
            "pizzeria",
            Some(tenant()),
            &[ADMIN],
            Duration::from_secs(600),
        )
    }

    fn verifier() -> Authentication {
        Authentication::Jwt(Arc::new(
            JwtVerifier::from_public_pem(PUBLIC, "pizzeria", "pizzeria").unwrap(),
        ))
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    fn refused(auth: &Authentication, headers: &http::HeaderMap) -> String {
        let status = auth.authenticate(headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        status.message().to_owned()
    }

    #[test]
    fn a_valid_token_yields_its_subject_tenant_and_roles() {
        let token = mint(PRIVATE, &claims()).unwrap();
        let caller = verifier().authenticate(&bearer(&token)).unwrap();
        assert_eq!(caller.subject, "alice");
        assert_eq!(caller.tenant().unwrap(), tenant());
        assert!(caller.require(ADMIN).is_ok());
        assert_eq!(
            caller.require(EVENT_READER).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn rsa_keys_sign_and_verify_rs256() {
        let token = mint(RSA_PRIVATE, &claims()).unwrap();
        let auth = Authentication::Jwt(Arc::new(
            JwtVerifier::from_public_pem(RSA_PUBLIC, "pizzeria", "pizzeria").unwrap(),
        ));
        assert_eq!(auth.authenticate(&bearer(&token)).unwrap().subject, "alice");
        // An EdDSA verifier refuses the RS256 token (and the other way round).
        assert!(refused(&verifier(), &bearer(&token)).contains("algorithm"));
    }

    #[test]
    fn missing_malformed_expired_misaddressed_and_forged_tokens_are_unauthenticated() {
        let auth = verifier();
        assert_eq!(
            refused(&auth, &http::HeaderMap::new()),
            "missing bearer token"
        );

        let mut basic = http::HeaderMap::new();
        basic.insert(
            http::header::AUTHORIZATION,
            "Basic YWxpY2U6eA==".parse().unwrap(),
        );
        assert!(refused(&auth, &basic).contains("Bearer"));
        assert_eq!(refused(&auth, &bearer("not.a.token")), "malformed token");
        assert_eq!(refused(&auth, &bearer("")), "malformed token");

        let mut expired = claims();
        expired.exp = expired.iat - 3600;
        let token = mint(PRIVATE, &expired).unwrap();
        assert_eq!(refused(&auth, &bearer(&token)), "token expired");

        let mut audience = claims();
        audience.aud = "another-service".into();
        let token = mint(PRIVATE, &audience).unwrap();
        assert_eq!(
            refused(&auth, &bearer(&token)),
            "token for another audience"
        );

        let mut issuer = claims();
        issuer.iss = "someone-else".into();
        let token = mint(PRIVATE, &issuer).unwrap();
        assert_eq!(
            refused(&auth, &bearer(&token)),
            "token from the wrong issuer"
        );

        let token = mint(OTHER_PRIVATE, &claims()).unwrap();
        assert_eq!(
            refused(&auth, &bearer(&token)),
            "token signature does not verify"
        );

        let mut bad_tenant = claims();
        bad_tenant.tenant = Some("tenant-one".into());
        let token = mint(PRIVATE, &bad_tenant).unwrap();
        assert!(refused(&auth, &bearer(&token)).contains("tenant"));
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn tampered_claims_alg_none_and_hmac_with_the_public_key_are_refused() {
        let auth = verifier();
        let token = mint(PRIVATE, &claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        // Another tenant's id pasted into a validly signed token.
        let mut other = claims();
        other.tenant = Some("0190b8f6-bbbb-7000-8000-000000000002".into());
        let payload = b64(&serde_json::to_vec(&other).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(
            refused(&auth, &bearer(&tampered)),
            "token signature does not verify"
        );

        // alg: none with no signature.
        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert_eq!(refused(&auth, &bearer(&none)), "malformed token");

        // HS256 keyed with the public key (the classic algorithm confusion).
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(PUBLIC),
        )
        .unwrap();
        assert!(refused(&auth, &bearer(&hmac)).contains("algorithm"));
    }

    #[test]
    fn without_authentication_the_header_names_the_tenant_and_every_role_is_held() {
        let mut headers = http::HeaderMap::new();
        let caller = Authentication::Disabled.authenticate(&headers).unwrap();
        assert_eq!(caller.tenant().unwrap(), DEFAULT_TENANT);
        assert!(caller.has_role(ADMIN) && caller.has_role(EVENT_READER));

        headers.insert(TENANT_HEADER, tenant().to_string().parse().unwrap());
        let caller = Authentication::Disabled.authenticate(&headers).unwrap();
        assert_eq!(caller.tenant().unwrap(), tenant());

        headers.insert(TENANT_HEADER, "tenant-one".parse().unwrap());
        let status = Authentication::Disabled.authenticate(&headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_token_without_a_tenant_may_not_act_for_one() {
        let mut service = claims();
        service.tenant = None;
        service.roles = vec![EVENT_READER.into()];
        let token = mint(PRIVATE, &service).unwrap();
        let caller = verifier().authenticate(&bearer(&token)).unwrap();
        assert_eq!(
            caller.tenant().unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(caller.require(EVENT_READER).is_ok());
    }

    #[test]
    fn the_configuration_must_choose_between_a_key_and_disabled() {
        let mut config = AuthConfig {
            disabled: false,
            public_key_file: None,
            issuer: "pizzeria".into(),
            audience: "pizzeria".into(),
        };
        assert!(config.authentication().is_err());
        config.disabled = true;
        assert!(matches!(
            config.authentication().unwrap(),
            Authentication::Disabled
        ));
        config.public_key_file = Some(
            [
                env!("CARGO_MANIFEST_DIR"),
                "testdata",
                "test-ed25519.pub.pem",
            ]
            .iter()
            .collect(),
        );
        assert!(config.authentication().is_err());
        config.disabled = false;
        assert!(matches!(
            config.authentication().unwrap(),
            Authentication::Jwt(_)
        ));
        config.public_key_file = Some("/nonexistent/key.pem".into());
        assert!(config.authentication().is_err());
    }
}
