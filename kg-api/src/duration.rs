//! Durations as people type them on command lines and in env vars: `250ms`, `2s`, `1m`, `24h`,
//! or a bare number of seconds. Shared by every KeyGrid binary's flags.

use std::time::Duration;

/// Parses `250ms`, `2s`, `1m`, `24h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 250ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<Duration>) {
        assert_eq!(parse_duration(text).ok(), expected, "{text:?}");
    }

    #[test]
    fn parses_durations_with_units() {
        check("250ms", Some(Duration::from_millis(250)));
        check("2s", Some(Duration::from_secs(2)));
        check("3", Some(Duration::from_secs(3)));
        check("1m", Some(Duration::from_secs(60)));
        check("24h", Some(Duration::from_secs(86400)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check("2 weeks", None);
        check("", None);
        check("-1s", None);
    }
}
