//! gRPC adapters: convert requests, call the application, map errors to statuses.

pub mod command_service;
pub mod convert;
pub mod event_log_service;
pub mod status;

use shared::values::TenantId;
use tonic::{Request, Status};
use uuid::Uuid;

/// Header naming the tenant while authentication is disabled (local use). Token-based tenancy
/// replaces it when auth is on.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// Tenant of calls that name none while auth is disabled.
pub const DEFAULT_TENANT: TenantId = TenantId::from_uuid(Uuid::nil());

/// The caller's tenant.
pub fn tenant<T>(request: &Request<T>) -> Result<TenantId, Status> {
    match request.metadata().get(TENANT_HEADER) {
        None => Ok(DEFAULT_TENANT),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|raw| TenantId::parse(raw).ok())
            .ok_or_else(|| Status::invalid_argument(format!("{TENANT_HEADER} must be a UUID"))),
    }
}
