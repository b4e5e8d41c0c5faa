//! Mints a bearer token for local use and tests: `mint-token --private-key key.pem --tenant <uuid>`.
//! In production tokens come from the identity provider; the services only hold its public key.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use shared::{
    auth::{TokenClaims, mint},
    values::TenantId,
};

/// Prints a JWT signed with a PKCS#8 PEM private key (Ed25519 → EdDSA, RSA → RS256).
#[derive(Debug, Parser)]
#[command(name = "mint-token", version, about)]
struct Args {
    /// The private key (e.g. from `openssl genpkey -algorithm ed25519 -out key.pem`).
    #[arg(long)]
    private_key: PathBuf,
    /// The tenant the token acts for (omit for a service token).
    #[arg(long)]
    tenant: Option<String>,
    /// A role to grant: `admin`, `event-reader`. Repeatable.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Who the token is for (the `sub` claim).
    #[arg(long, default_value = "local-user")]
    subject: String,
    /// How long the token is valid: `90s`, `60m`.
    #[arg(long, default_value = "60m", value_parser = shared::config::parse_duration)]
    ttl: Duration,
    #[arg(long, default_value = "pizzeria")]
    issuer: String,
    #[arg(long, default_value = "pizzeria")]
    audience: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tenant = match args.tenant.as_deref().map(TenantId::parse).transpose() {
        Ok(tenant) => tenant,
        Err(_) => {
            eprintln!("--tenant must be a UUID");
            return ExitCode::FAILURE;
        }
    };
    let pem = match std::fs::read(&args.private_key) {
        Ok(pem) => pem,
        Err(error) => {
            eprintln!("cannot read {}: {error}", args.private_key.display());
            return ExitCode::FAILURE;
        }
    };
    let roles: Vec<&str> = args.roles.iter().map(String::as_str).collect();
    let claims = TokenClaims::new(
        &args.subject,
        &args.issuer,
        &args.audience,
        tenant,
        &roles,
        args.ttl,
    );
    match mint(&pem, &claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
