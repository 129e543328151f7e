//! Points in time as the CLI takes them: `10m` (that long ago), `2026-12-01`,
//! `2026-12-01T10:00`, `2026-12-01T10:00:30`, `2026-12-01 10:00:30.250Z`. Times without
//! a zone are UTC, as muster writes them in its logs and history.

use std::time::{Duration, SystemTime};

/// The time `text` names, `now` being the present.
pub fn parse(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let trimmed = text.trim();
    if let Ok(ago) = crate::config::values::duration(trimmed) {
        return Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    let normal = normalize(trimmed);
    humantime::parse_rfc3339_weak(&normal).map_err(|_| {
        format!(
            "`{text}` is neither a duration (such as 10m or 2h) nor a time (such as 2026-12-01T10:00 or 2026-12-01T10:00:00Z, UTC)"
        )
    })
}

/// Fills what humantime needs: seconds, and a time for a bare date.
fn normalize(text: &str) -> String {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, time),
        None => (text, "00:00:00"),
    };
    let time = if time.len() == 5 {
        format!("{time}:00")
    } else {
        time.to_owned()
    };
    format!("{date}T{time}Z")
}

/// For clap: a time, from now.
pub fn parse_arg(text: &str) -> Result<SystemTime, String> {
    parse(text, SystemTime::now())
}

/// The form muster writes times in (RFC 3339, milliseconds, UTC): strings of it sort
/// as the times they stand for.
pub fn stamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Milliseconds since the epoch, for the history's queries.
pub fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        assert_eq!(
            stamp(parse("10m", now).unwrap()),
            "2026-12-01T11:50:00.000Z"
        );
        for (text, want) in [
            ("2026-12-01T10:00", "2026-12-01T10:00:00.000Z"),
            ("2026-12-01 10:00:30", "2026-12-01T10:00:30.000Z"),
            ("2026-12-01T10:00:30.250Z", "2026-12-01T10:00:30.250Z"),
            ("2026-12-01", "2026-12-01T00:00:00.000Z"),
        ] {
            assert_eq!(stamp(parse(text, now).unwrap()), want, "{text}");
        }
        assert!(parse("yesterday", now).is_err());
    }
}
