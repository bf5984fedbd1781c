//! The leak rule.
//!
//! A spawn location is a *leak suspect* when, over the last `windows` windows (1 s each by
//! default, 5 of them):
//! 1. its live count rose in at least `windows - 1` of them and never fell,
//! 2. it rose by at least `min_growth` in total (20 by default), and
//! 3. its oldest live task is at least as old as all the windows together, when the age is
//!    known: tasks from the start of the span are still alive.
//!
//! A steady accept loop has a flat or fluctuating live count (rule 1 fails); a ramp of short
//! tasks has young tasks only (rule 3 fails); a long-lived worker does not grow (rule 2 fails).

use std::time::Duration;

/// `live` holds the live count at each window boundary, oldest first.
pub(crate) fn is_suspect(
    live: &[u64],
    windows: usize,
    min_growth: u64,
    oldest_age: Option<Duration>,
    span: Duration,
) -> bool {
    if live.len() < windows + 1 {
        return false;
    }
    let recent = &live[live.len() - windows - 1..];
    let mut rises = 0;
    for w in recent.windows(2) {
        if w[1] < w[0] {
            return false;
        }
        if w[1] > w[0] {
            rises += 1;
        }
    }
    let growth = recent[recent.len() - 1] - recent[0];
    let old_enough = oldest_age.is_none_or(|age| age >= span);
    rises + 1 >= windows && growth >= min_growth && old_enough
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: Duration = Duration::from_secs(5);

    #[test]
    fn steady_growth_of_old_tasks_is_a_leak() {
        assert!(is_suspect(&[0, 10, 20, 30, 40, 50], 5, 20, Some(Duration::from_secs(6)), S));
    }

    #[test]
    fn a_flat_or_fluctuating_count_is_not() {
        assert!(!is_suspect(&[5, 5, 5, 5, 5, 5], 5, 20, Some(Duration::from_secs(60)), S));
        assert!(!is_suspect(&[10, 40, 12, 45, 11, 50], 5, 20, Some(Duration::from_secs(60)), S));
    }

    #[test]
    fn growth_of_young_tasks_is_a_ramp_not_a_leak() {
        assert!(!is_suspect(&[0, 10, 20, 30, 40, 50], 5, 20, Some(Duration::from_millis(300)), S));
    }

    #[test]
    fn small_growth_and_short_history_are_not_leaks() {
        assert!(!is_suspect(&[1, 2, 3, 4, 5, 6], 5, 20, Some(Duration::from_secs(60)), S));
        assert!(!is_suspect(&[0, 30, 60], 5, 20, Some(Duration::from_secs(60)), S));
    }
}
