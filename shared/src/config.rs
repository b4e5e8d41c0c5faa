//! Parsers for configuration values both services accept.

use std::time::Duration;

/// Parses `250ms`, `10s`, `5m` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 250ms, 10s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("{raw:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A JetStream stream name: letters, digits, `_` and `-` (no `.`, `*`, `>` or spaces).
pub fn parse_stream_name(raw: &str) -> Result<String, String> {
    if is_token(raw) {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a stream name (use letters, digits, _ and -)"
        ))
    }
}

/// A NATS subject prefix: dot-separated tokens of letters, digits, `_` and `-`, no wildcards.
pub fn parse_subject_prefix(raw: &str) -> Result<String, String> {
    if raw.split('.').all(is_token) {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a subject prefix (dot-separated tokens of letters, digits, _ and -)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn stream_names_and_subject_prefixes_refuse_wildcards_and_empty_tokens() {
        assert_eq!(
            parse_stream_name("PIZZERIA_EVENTS-1"),
            Ok("PIZZERIA_EVENTS-1".into())
        );
        for bad in ["", "A.B", "A*", "A>", "A B"] {
            assert!(parse_stream_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_subject_prefix("pizzeria.events"),
            Ok("pizzeria.events".into())
        );
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(parse_subject_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
