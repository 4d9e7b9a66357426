//! The value objects' checked constructors: what each accepts, what it refuses, and that
//! what it writes it can read back.
//!
//! These types are the edge where raw text from requests and the event store becomes a
//! typed value, so the refusals matter as much as the acceptances.

use chrono::{DateTime, TimeZone, Utc};
use domain::ids::StreamKind;
use domain::{Channel, Micros, Period, PostId, ReservationId, StreamName, TenantId, ValueError};
use uuid::Uuid;

fn period(year: i32, month: u32) -> Period {
    Period::new(year, month).expect("a valid period")
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("a valid instant")
}

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::from_u128(0x0192_3b8c_1d2e_7f00_8a00_0000_0000_0001))
}

fn post() -> PostId {
    PostId::from_uuid(Uuid::from_u128(0x0192_3b8c_1d2e_7f00_8a00_0000_0000_0002))
}

// ---------------------------------------------------------------------------
// Micros.
// ---------------------------------------------------------------------------

#[test]
fn a_negative_amount_is_refused() {
    assert_eq!(Micros::new(-1), Err(ValueError::NegativeAmount));
    assert_eq!(Micros::new(i64::MIN), Err(ValueError::NegativeAmount));
}

#[test]
fn zero_and_positive_amounts_are_accepted() {
    assert_eq!(Micros::new(0), Ok(Micros::ZERO));
    assert_eq!(Micros::new(1_000_000).map(Micros::get), Ok(1_000_000));
    assert_eq!(Micros::new(i64::MAX).map(Micros::get), Ok(i64::MAX));
}

#[test]
fn adding_amounts_saturates_instead_of_overflowing() {
    let max = Micros::new(i64::MAX).expect("not negative");
    let one = Micros::new(1).expect("not negative");
    assert_eq!(max.saturating_add(one), max);
}

#[test]
fn subtracting_a_larger_amount_floors_at_zero() {
    let three = Micros::new(3).expect("not negative");
    let five = Micros::new(5).expect("not negative");
    assert_eq!(three.saturating_sub(five), Micros::ZERO);
    assert_eq!(five.saturating_sub(three).get(), 2);
}

#[test]
fn an_amount_displays_with_its_unit() {
    assert_eq!(
        Micros::new(42).expect("not negative").to_string(),
        "42 micro-USD"
    );
}

// ---------------------------------------------------------------------------
// Period.
// ---------------------------------------------------------------------------

#[test]
fn a_year_and_month_parse_into_a_period() {
    assert_eq!("2026-11".parse::<Period>(), Ok(period(2026, 11)));
    assert_eq!("1970-01".parse::<Period>(), Ok(period(1970, 1)));
    assert_eq!("9999-12".parse::<Period>(), Ok(period(9999, 12)));
}

#[test]
fn a_period_displays_as_it_parses() {
    for raw in ["2026-11", "2026-01", "1970-01", "9999-12"] {
        let parsed: Period = raw.parse().expect("a valid period");
        assert_eq!(parsed.to_string(), raw);
    }
}

#[test]
fn malformed_periods_are_refused() {
    let bad = [
        "",
        "2026",
        "2026-",
        "-11",
        "2026-1",
        "2026-011",
        "26-11",
        "02026-11",
        "2026/11",
        "2026-11-01",
        " 2026-11",
        "2026-11 ",
        "abcd-ef",
        "2026-1a",
        "2026-+1",
        "+026-11",
        "-026-11",
        "２０２６-11",
    ];
    for raw in bad {
        assert_eq!(raw.parse::<Period>(), Err(ValueError::BadPeriod), "{raw:?}");
    }
}

#[test]
fn a_month_outside_one_to_twelve_is_refused() {
    assert_eq!("2026-00".parse::<Period>(), Err(ValueError::BadPeriod));
    assert_eq!("2026-13".parse::<Period>(), Err(ValueError::BadPeriod));
    assert_eq!(Period::new(2026, 0), Err(ValueError::BadPeriod));
    assert_eq!(Period::new(2026, 13), Err(ValueError::BadPeriod));
}

#[test]
fn a_year_outside_1970_to_9999_is_refused() {
    assert_eq!("1969-12".parse::<Period>(), Err(ValueError::BadPeriod));
    assert_eq!(Period::new(1969, 12), Err(ValueError::BadPeriod));
    assert_eq!(Period::new(10_000, 1), Err(ValueError::BadPeriod));
}

#[test]
fn a_period_exposes_its_year_and_month() {
    let p = period(2026, 11);
    assert_eq!((p.year(), p.month()), (2026, 11));
}

#[test]
fn the_month_before_march_is_february_of_the_same_year() {
    assert_eq!(period(2026, 3).previous(), period(2026, 2));
}

#[test]
fn the_month_before_january_is_december_of_the_year_before() {
    assert_eq!(period(2026, 1).previous(), period(2025, 12));
}

#[test]
fn the_month_before_december_is_november() {
    assert_eq!(period(2026, 12).previous(), period(2026, 11));
}

#[test]
fn periods_order_by_time() {
    assert!(period(2025, 12) < period(2026, 1));
    assert!(period(2026, 1) < period(2026, 2));
}

#[test]
fn an_instant_belongs_to_its_utc_month() {
    assert_eq!(
        Period::containing(at(2026, 11, 15, 12, 0, 0)),
        period(2026, 11)
    );
}

#[test]
fn the_last_second_of_a_month_belongs_to_that_month() {
    assert_eq!(
        Period::containing(at(2026, 11, 30, 23, 59, 59)),
        period(2026, 11)
    );
    assert_eq!(
        Period::containing(at(2025, 12, 31, 23, 59, 59)),
        period(2025, 12)
    );
}

#[test]
fn the_first_instant_of_a_month_belongs_to_that_month() {
    assert_eq!(
        Period::containing(at(2026, 12, 1, 0, 0, 0)),
        period(2026, 12)
    );
    assert_eq!(Period::containing(at(2026, 1, 1, 0, 0, 0)), period(2026, 1));
}

#[test]
fn a_period_starts_at_midnight_utc_on_the_first() {
    assert_eq!(period(2026, 11).start(), at(2026, 11, 1, 0, 0, 0));
    assert_eq!(period(2024, 2).start(), at(2024, 2, 1, 0, 0, 0));
}

#[test]
fn the_start_of_a_period_is_contained_in_it_and_a_second_earlier_is_not() {
    let p = period(2026, 1);
    assert_eq!(Period::containing(p.start()), p);
    assert_eq!(
        Period::containing(p.start() - chrono::TimeDelta::seconds(1)),
        p.previous()
    );
}

// ---------------------------------------------------------------------------
// Channel.
// ---------------------------------------------------------------------------

#[test]
fn a_lowercase_slug_is_a_channel() {
    for raw in ["linkedin", "newsletter-eu", "x_2", "0", "a-b_c-9"] {
        assert_eq!(
            Channel::new(raw).map(|c| c.as_str().to_owned()),
            Ok(raw.to_owned())
        );
    }
}

#[test]
fn a_channel_of_sixty_four_characters_is_accepted() {
    let raw = "a".repeat(64);
    assert_eq!(Channel::new(&raw).map(|c| c.to_string()), Ok(raw));
}

#[test]
fn a_channel_of_sixty_five_characters_is_refused() {
    assert_eq!(Channel::new(&"a".repeat(65)), Err(ValueError::BadChannel));
}

#[test]
fn an_empty_channel_is_refused() {
    assert_eq!(Channel::new(""), Err(ValueError::BadChannel));
}

#[test]
fn a_channel_with_anything_but_lowercase_letters_digits_dashes_or_underscores_is_refused() {
    for raw in [
        "LinkedIn",
        "linked in",
        "linked.in",
        "a/b",
        "ü",
        "x!",
        " x",
        "x\n",
    ] {
        assert_eq!(Channel::new(raw), Err(ValueError::BadChannel), "{raw:?}");
    }
}

// ---------------------------------------------------------------------------
// Ids.
// ---------------------------------------------------------------------------

#[test]
fn an_id_displays_as_its_uuid_and_parses_back() {
    let id = ReservationId::from_uuid(Uuid::from_u128(42));
    assert_eq!(id.to_string(), Uuid::from_u128(42).to_string());
    assert_eq!(id.to_string().parse::<ReservationId>().ok(), Some(id));
    assert_eq!(id.as_uuid(), Uuid::from_u128(42));
}

#[test]
fn an_id_that_is_not_a_uuid_is_refused() {
    assert!("not-a-uuid".parse::<TenantId>().is_err());
}

// ---------------------------------------------------------------------------
// StreamName.
// ---------------------------------------------------------------------------

#[test]
fn a_budget_stream_is_named_by_tenant_and_month() {
    let name = StreamName::budget(tenant(), period(2026, 11));
    assert_eq!(name.as_str(), format!("tenant/{}/budget/2026-11", tenant()));
    assert_eq!(name.to_string(), name.as_str());
}

#[test]
fn a_post_stream_is_named_by_tenant_and_post() {
    let name = StreamName::post(tenant(), post());
    assert_eq!(
        name.as_str(),
        format!("tenant/{}/post/{}", tenant(), post())
    );
}

#[test]
fn a_budget_stream_name_parses_back_into_its_tenant_and_month() {
    let name = StreamName::budget(tenant(), period(2026, 1));
    assert_eq!(
        StreamName::parse(name.as_str()),
        Ok((tenant(), StreamKind::Budget(period(2026, 1))))
    );
}

#[test]
fn a_post_stream_name_parses_back_into_its_tenant_and_post() {
    let name = StreamName::post(tenant(), post());
    assert_eq!(
        StreamName::parse(name.as_str()),
        Ok((tenant(), StreamKind::Post(post())))
    );
}

#[test]
fn names_that_are_not_tidemark_streams_are_refused_and_quoted() {
    let t = tenant();
    let p = post();
    let upper = t.to_string().to_uppercase();
    let simple = t.as_uuid().simple().to_string();
    let bad = [
        String::new(),
        "tenant".to_owned(),
        format!("tenant/{t}"),
        format!("tenant/{t}/budget"),
        format!("tenant/{t}/budget/2026-13"),
        format!("tenant/{t}/budget/2026-11/extra"),
        format!("tenant/{t}/post/not-a-uuid"),
        format!("tenant/{t}/post/{p}/"),
        format!("tenant/{t}/campaign/{p}"),
        format!("tenants/{t}/budget/2026-11"),
        format!("/tenant/{t}/budget/2026-11"),
        format!("budget/{t}/2026-11"),
        "tenant/not-a-uuid/budget/2026-11".to_owned(),
        // Other spellings of the same UUIDs would name a second stream for the same
        // tenant's month or post.
        format!("tenant/{upper}/budget/2026-11"),
        format!("tenant/{simple}/budget/2026-11"),
        format!("tenant/{{{t}}}/budget/2026-11"),
        format!("tenant/urn:uuid:{t}/budget/2026-11"),
        format!("tenant/{t}/post/{}", p.to_string().to_uppercase()),
    ];
    for raw in bad {
        assert_eq!(
            StreamName::parse(&raw),
            Err(ValueError::BadStreamName(raw.clone())),
            "{raw:?}"
        );
    }
}
