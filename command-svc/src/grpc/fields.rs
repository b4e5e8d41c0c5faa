//! What every command request's conversion needs, whatever its bounded context: the options in
//! fields 1 and 2, the converted result, and the helpers that record one [`FieldViolation`] per
//! bad field (so that a client fixes a request in one round trip).
//!
//! Parse, don't validate: each context's converter (`convert` for the pizzeria, `training` for
//! training plans) sends every field through the constructor of its value type and collects the
//! violations with these helpers.

use std::{fmt, ops::RangeInclusive};

use chrono::{DateTime, Utc};
use shared::values::{CommandId, ValueError};

pub use shared::grpc::FieldViolation;

/// Fields 1 and 2 that every command request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandOptions {
    /// Idempotency key; `None` when the request left it empty.
    pub command_id: Option<CommandId>,
    /// Optimistic concurrency check; `None` means "decide against the latest state".
    pub expected_version: Option<u64>,
}

/// A request that converted cleanly: its options, the aggregate it targets and the command.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted<Id, C> {
    /// `command_id` and `expected_version`.
    pub options: CommandOptions,
    /// The target aggregate: given by the client, or generated for a new aggregate.
    pub id: Id,
    /// The validated domain command.
    pub command: C,
}

/// Largest `nanos` a `google.protobuf.Timestamp` may carry.
const MAX_NANOS: u32 = 999_999_999;

/// Seconds a `google.protobuf.Timestamp` may carry: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59Z, as its spec defines.
const TIMESTAMP_SECONDS: RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Records a violation at `path`.
pub fn violation(violations: &mut Vec<FieldViolation>, path: &str, description: impl fmt::Display) {
    violations.push(FieldViolation {
        field: path.to_owned(),
        description: description.to_string(),
    });
}

/// The parsed value, or `None` after recording why it was refused.
pub fn field<T, E: fmt::Display>(
    violations: &mut Vec<FieldViolation>,
    path: &str,
    result: Result<T, E>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            violation(violations, path, error);
            None
        }
    }
}

/// The converted request if no field was refused, otherwise every violation.
///
/// `build` runs only when nothing was recorded, and every helper that yields `None` records a
/// violation, so in practice `build` then succeeds.
pub fn finish<T>(
    violations: Vec<FieldViolation>,
    build: impl FnOnce() -> Option<T>,
) -> Result<T, Vec<FieldViolation>> {
    if !violations.is_empty() {
        return Err(violations);
    }
    build().ok_or(violations)
}

/// Fields 1 and 2. An empty command id means the client wants no idempotency, so only a non-empty
/// one must be a UUID.
pub fn command_options(
    violations: &mut Vec<FieldViolation>,
    command_id: &str,
    expected_version: Option<u64>,
) -> CommandOptions {
    let command_id = if command_id.is_empty() {
        None
    } else {
        field(violations, "command_id", CommandId::parse(command_id))
    };
    CommandOptions {
        command_id,
        expected_version,
    }
}

/// The id of a new aggregate: parsed if the client chose one, generated (UUIDv7) if it is empty.
pub fn given_or_new_id<Id>(
    violations: &mut Vec<FieldViolation>,
    path: &str,
    raw: &str,
    parse: fn(&str) -> Result<Id, ValueError>,
    generate: fn() -> Id,
) -> Option<Id> {
    if raw.is_empty() {
        Some(generate())
    } else {
        field(violations, path, parse(raw))
    }
}

/// Converts a `google.protobuf.Timestamp`, refusing what its spec forbids rather than wrapping or
/// truncating. Bad parts are reported at `<path>.seconds` and `<path>.nanos`.
pub fn timestamp_to_datetime(
    violations: &mut Vec<FieldViolation>,
    path: &str,
    seconds: i64,
    nanos: i32,
) -> Option<DateTime<Utc>> {
    let seconds = field(
        violations,
        &format!("{path}.seconds"),
        in_range(seconds, &TIMESTAMP_SECONDS),
    );
    // Checked explicitly: chrono reads nanos of one second or more as a leap second, which the
    // Timestamp spec does not allow.
    let nanos = field(
        violations,
        &format!("{path}.nanos"),
        u32::try_from(nanos)
            .ok()
            .filter(|nanos| *nanos <= MAX_NANOS)
            .ok_or(ValueError::OutOfRange {
                min: 0,
                max: i64::from(MAX_NANOS),
            }),
    );
    let time = DateTime::from_timestamp(seconds?, nanos?);
    if time.is_none() {
        // Unreachable within the spec's range, which chrono covers; kept so no input can panic.
        violation(violations, path, "is not a representable time");
    }
    time
}

/// `value` if it lies in `range`.
pub fn in_range(value: i64, range: &RangeInclusive<i64>) -> Result<i64, ValueError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ValueError::OutOfRange {
            min: *range.start(),
            max: *range.end(),
        })
    }
}
