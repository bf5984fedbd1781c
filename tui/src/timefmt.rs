//! Durations and wall-clock times: human formatting, RFC 3339, and the `--since`/`--until`
//! syntax.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration for people: "53.2 ms", "1.20 s" (the wire crate's, shared with the probe).
///
/// ```
/// use stallscope::timefmt::fmt_ns;
/// assert_eq!(fmt_ns(53_200_000), "53.2 ms");
/// ```
pub use stallscope_wire::fmt_ns;

/// Nanoseconds as fractional milliseconds, rounded to the microsecond (the unit of the JSON
/// report).
pub fn ns_to_ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

/// `2025-11-21T04:40:00.137Z` for a Unix time in milliseconds (the wire crate's, shared with
/// the text report).
///
/// ```
/// use stallscope::timefmt::rfc3339_ms;
/// assert_eq!(rfc3339_ms(1_763_700_000_137), "2025-11-21T04:40:00.137Z");
/// ```
pub use stallscope_wire::rfc3339_ms;

/// `2025-11-21 04:40:00` (UTC, to the second) for titles.
pub fn short_utc(unix_ms: u64) -> String {
    let s = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string();
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A bad time or duration argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError(String);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeError {}

/// Parses a duration such as `10s`, `500ms`, `2m` or `1m 30s`.
///
/// ```
/// use std::time::Duration;
/// use stallscope::timefmt::parse_duration;
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
/// assert!(parse_duration("ten").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, TimeError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| TimeError(format!("bad duration '{s}': {e} (examples: 10s, 500ms, 2m, 1h 30m)")))
}

/// A point in a recording given on the command line: relative to the recording's start, or an
/// absolute wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// This long after the recording started (`5s`, `1m 30s`).
    Relative(Duration),
    /// This wall-clock time, milliseconds since the Unix epoch (from RFC 3339).
    Absolute(u64),
}

impl TimeSpec {
    /// The time in milliseconds since the Unix epoch, for a recording that started at
    /// `start_unix_ms`.
    pub fn resolve(self, start_unix_ms: u64) -> u64 {
        match self {
            TimeSpec::Relative(d) => start_unix_ms.saturating_add(d.as_millis() as u64),
            TimeSpec::Absolute(ms) => ms,
        }
    }
}

impl std::str::FromStr for TimeSpec {
    type Err = TimeError;

    /// `5s`, `500ms`, `2m` (relative to the recording's start) or an RFC 3339 time
    /// (`2025-11-21T04:40:05Z`, `2025-11-21T06:40:05.250+02:00`).
    fn from_str(s: &str) -> Result<TimeSpec, TimeError> {
        let t = s.trim();
        if t.len() >= 10 && t.as_bytes()[4] == b'-' {
            return parse_rfc3339(t).map(TimeSpec::Absolute);
        }
        humantime::parse_duration(t).map(TimeSpec::Relative).map_err(|_| {
            TimeError(format!(
                "bad time '{s}': give a time since the recording started (5s, 1m 30s) or an RFC 3339 time \
                 (2025-11-21T04:40:05Z)"
            ))
        })
    }
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; a space may replace
/// the `T`) into milliseconds since the Unix epoch.
///
/// ```
/// use stallscope::timefmt::parse_rfc3339;
/// assert_eq!(parse_rfc3339("2025-11-21T04:40:00.137Z").unwrap(), 1_763_700_000_137);
/// assert_eq!(parse_rfc3339("2025-11-21T06:40:00.137+02:00").unwrap(), 1_763_700_000_137);
/// ```
pub fn parse_rfc3339(s: &str) -> Result<u64, TimeError> {
    let bad = |why: &str| TimeError(format!("bad RFC 3339 time '{s}': {why} (example: 2025-11-21T04:40:05Z)"));
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(bad("too short"));
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, TimeError> {
        let part = s.get(range).ok_or_else(|| bad("not ASCII"))?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("expected digits"));
        }
        part.parse::<u32>().map_err(|_| bad("expected digits"))
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut millis = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad("expected digits after '.'"));
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<u64>().unwrap_or(0) * 10u64.pow(3 - frac.len() as u32);
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad("bad UTC offset"));
            }
            let o = (oh * 3600 + om * 60) as i64;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(bad("expected 'Z' or a UTC offset such as +02:00 at the end")),
    };
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second.min(59)) as i64 - offset_s;
    if secs < 0 {
        return Err(bad("before 1970"));
    }
    Ok(secs as u64 * 1000 + millis)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 => (days_from_civil(year as i64, 3, 1) - days_from_civil(year as i64, 2, 1)) as u32,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for ms in [0u64, 951_782_400_000, 1_763_700_000_137, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&rfc3339_ms(ms)).unwrap(), ms, "{}", rfc3339_ms(ms));
        }
        assert_eq!(parse_rfc3339("2025-11-21 04:40:00Z").unwrap(), 1_763_700_000_000);
        assert_eq!(parse_rfc3339("2025-11-21T04:40:00.5Z").unwrap(), 1_763_700_000_500);
        assert_eq!(parse_rfc3339("2025-11-21T00:40:00-04:00").unwrap(), 1_763_700_000_000);
    }

    #[test]
    fn bad_times_say_why() {
        for bad in ["2025-13-01T00:00:00Z", "2025-02-30T00:00:00Z", "2025-11-21T04:40:00", "2025-11-21T04:40Z"] {
            let e = parse_rfc3339(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!("soon".parse::<TimeSpec>().unwrap_err().to_string().contains("RFC 3339"));
    }

    #[test]
    fn time_specs() {
        assert_eq!("5s".parse::<TimeSpec>().unwrap(), TimeSpec::Relative(Duration::from_secs(5)));
        assert_eq!("5s".parse::<TimeSpec>().unwrap().resolve(1000), 6000);
        assert_eq!("2025-11-21T04:40:00Z".parse::<TimeSpec>().unwrap(), TimeSpec::Absolute(1_763_700_000_000));
    }

    #[test]
    fn human_durations() {
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(850_000), "850 µs");
        assert_eq!(ns_to_ms(212_345_678), 212.345);
    }
}
