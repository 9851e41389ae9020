//! Unix times as dates people read: `2026-12-07 18:00:05 UTC`.

/// `unix` as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian calendar, as `date -u`).
pub fn format_utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so that a leap day ends its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_date_u_prints_them() {
        for (unix, text) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (86_399, "1970-01-01 23:59:59 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (951_868_800, "2000-03-01 00:00:00 UTC"),
            (1_700_000_000, "2023-11-14 22:13:20 UTC"),
            (1_796_611_185, "2026-12-07 02:39:45 UTC"),
            (4_102_444_799, "2099-12-31 23:59:59 UTC"),
            (4_107_542_400, "2100-03-01 00:00:00 UTC"),
            (253_402_300_799, "9999-12-31 23:59:59 UTC"),
        ] {
            assert_eq!(format_utc(unix), text, "{unix}");
        }
        // Far past the calendar anyone publishes in, still no overflow.
        assert!(format_utc(u64::MAX).ends_with(" UTC"));
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let mut last = civil_from_days(0);
        for days in 1..200_000 {
            let (y, m, d) = civil_from_days(days);
            let next_day = (y, m, d) == (last.0, last.1, last.2 + 1);
            let next_month = d == 1 && (y, m) == (last.0, last.1 + 1);
            let next_year = (m, d) == (1, 1) && y == last.0 + 1 && last.1 == 12;
            assert!(
                next_day || next_month || next_year,
                "{last:?} -> {:?}",
                (y, m, d)
            );
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let month_days = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(d >= 1 && d <= month_days[(m - 1) as usize], "{y}-{m}-{d}");
            last = (y, m, d);
        }
    }
}
