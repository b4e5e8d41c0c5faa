//! Upcasters: read an older stored event shape as the current one.
//!
//! A stored event is never rewritten. When a shape changes, its schema version goes up and a step
//! `(type, from_version) → from_version + 1` joins the [`Upcasters`] of its event family (each
//! family passes its own table to [`crate::events::DomainEvent::decode`]'s declaration; the
//! pizzeria's are in `events::upcasters`). [`Upcasters::upcast`] chains the steps. Every read
//! path goes through `decode`, which calls it first.

use serde_json::Value;

/// Why an old payload could not be brought to the current version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("{event_type} has no schema version {version} (current is {current})")]
    UnknownVersion {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("no upcaster for {event_type} v{version}")]
    MissingStep { event_type: String, version: u32 },
    #[error("{event_type} v{version} payload is malformed: {reason}")]
    Malformed {
        event_type: String,
        version: u32,
        reason: String,
    },
}

/// One step: the payload of `event_type` at `from_version` to the payload at
/// `from_version + 1`, or why it cannot be read.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub event_type: &'static str,
    pub from_version: u32,
    pub apply: fn(Value) -> Result<Value, String>,
}

/// The upcasting steps of one event family.
#[derive(Debug, Clone, Copy)]
pub struct Upcasters {
    steps: &'static [Step],
}

impl Upcasters {
    /// A family whose shapes never changed.
    pub const NONE: Self = Self { steps: &[] };

    pub const fn new(steps: &'static [Step]) -> Self {
        Self { steps }
    }

    /// Brings `payload` of `event_type` from `version` up to `current`.
    pub fn upcast(
        &self,
        event_type: &str,
        version: u32,
        current: u32,
        mut payload: Value,
    ) -> Result<Value, UpcastError> {
        if version == 0 || version > current {
            return Err(UpcastError::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
                current,
            });
        }
        for from_version in version..current {
            let step = self
                .steps
                .iter()
                .find(|s| s.event_type == event_type && s.from_version == from_version)
                .ok_or_else(|| UpcastError::MissingStep {
                    event_type: event_type.to_owned(),
                    version: from_version,
                })?;
            payload = (step.apply)(payload).map_err(|reason| UpcastError::Malformed {
                event_type: event_type.to_owned(),
                version: from_version,
                reason,
            })?;
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn renamed(mut payload: Value) -> Result<Value, String> {
        let name = payload
            .as_object_mut()
            .and_then(|o| o.remove("title"))
            .ok_or("title is missing")?;
        Ok(json!({ "name": name }))
    }

    fn tagged(mut payload: Value) -> Result<Value, String> {
        payload["tag"] = json!("v3");
        Ok(payload)
    }

    const STEPS: Upcasters = Upcasters::new(&[
        Step {
            event_type: "Thing",
            from_version: 2,
            apply: tagged,
        },
        Step {
            event_type: "Thing",
            from_version: 1,
            apply: renamed,
        },
    ]);

    #[test]
    fn steps_chain_from_the_stored_version_to_the_current_one() {
        let from_v1 = STEPS.upcast("Thing", 1, 3, json!({"title": "x"})).unwrap();
        assert_eq!(from_v1, json!({"name": "x", "tag": "v3"}));
        let from_v2 = STEPS.upcast("Thing", 2, 3, json!({"name": "x"})).unwrap();
        assert_eq!(from_v2, from_v1);
        assert_eq!(
            STEPS.upcast("Thing", 3, 3, json!({"a": 1})).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn unknown_versions_missing_steps_and_malformed_payloads_are_errors_not_panics() {
        assert!(matches!(
            STEPS.upcast("Thing", 4, 3, json!({})),
            Err(UpcastError::UnknownVersion { .. })
        ));
        assert!(matches!(
            STEPS.upcast("Thing", 0, 3, json!({})),
            Err(UpcastError::UnknownVersion { .. })
        ));
        assert!(matches!(
            Upcasters::NONE.upcast("Other", 1, 2, json!({})),
            Err(UpcastError::MissingStep { .. })
        ));
        assert!(matches!(
            STEPS.upcast("Thing", 1, 3, json!({"name": "no title"})),
            Err(UpcastError::Malformed { .. })
        ));
    }
}
