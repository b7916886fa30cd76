//! Portfolio outreach governance: cadences published centrally, named time zones with
//! daylight saving, company calendars and the portfolio contact rules, all checked by the
//! one validator with the offending path named.

use gtm_config::Document;
use gtm_config::zones::{in_send_window, zone};

const BASE: &str = r#"
baseline:
  portfolioContact: {maxTouches: 2, windowDays: 7, minHoursBetweenTouches: 48, exclusiveCadences: true}
  cadences:
    - key: upsell
      name: Upsell
      sendWindow: {timeZone: America/New_York, start: "09:00", end: "17:00"}
      sender: team@portfolio.example
      variables: {signature: "The team"}
      localizable: [sender, variables]
      steps:
        - {type: auto_email, delayHours: 0, subject: "A gift", body: "Hi {{firstName}}, {{signature}}"}
  upsellRules:
    - key: default
      cadence: upsell
      scoring: [{property: amount, op: linear, points: 0.001}]
      guardrails:
        quietHours: {start: "20:00", end: "08:00", defaultTimeZone: Europe/Berlin}
        rollingCaps: [{hours: 1, max: 10}, {hours: 24, max: 100}]
companies:
"#;

fn doc(companies: &str) -> Document {
    Document::from_yaml(&format!("{BASE}{companies}")).expect("parses")
}

#[test]
fn a_company_may_localise_the_allowed_fields_of_a_governed_cadence() {
    let d = doc(r#"
  acme:
    companyId: c-acme
    outreach: {timeZone: Europe/Berlin, holidays: ["2026-12-24", "2026-12-25"]}
    cadences:
      - key: upsell
        name: Upsell
        sendWindow: {timeZone: America/New_York, start: "09:00", end: "17:00"}
        sender: sales@acme.example
        variables: {signature: "Anna at Acme"}
        steps:
          - {type: auto_email, delayHours: 0, subject: "A gift", body: "Hi {{firstName}}, {{signature}}"}
"#);
    d.validate().expect("sender and variables are localizable");
    let acme = d.effective("acme").expect("acme");
    assert_eq!(acme.cadences[0].sender.as_deref(), Some("sales@acme.example"));
    assert_eq!(acme.calendar.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(acme.portfolio_contact.max_touches, Some(2));
}

#[test]
fn a_locked_field_override_is_refused_with_its_path() {
    let d = doc(r#"
  acme:
    companyId: c-acme
    cadences:
      - key: upsell
        name: Upsell
        sendWindow: {timeZone: America/New_York, start: "09:00", end: "17:00"}
        steps:
          - {type: auto_email, delayHours: 0, subject: "BUY NOW", body: "Hi"}
          - {type: call, delayHours: 24, instructions: "Call"}
    removeCadences: []
  bright:
    companyId: c-bright
    removeCadences: [upsell]
"#);
    let errors = d.validate().expect_err("steps are locked");
    assert!(errors.has_path("companies.acme.cadences[0].steps"), "{errors}");
    let steps = errors.iter().find(|e| e.path == "companies.acme.cadences[0].steps").expect("steps");
    assert!(steps.message.contains("locked by the baseline cadence \"upsell\" (baseline.cadences[0])"), "{errors}");
    assert!(steps.message.contains("sender, variables"), "{errors}");
    assert!(!errors.has_path("companies.acme.cadences[0].sender"), "unchanged is fine: {errors}");
    assert!(errors.has_path("companies.bright.removeCadences[0]"), "a governed cadence stays: {errors}");
}

#[test]
fn unknown_zones_holidays_and_bad_portfolio_rules_are_refused() {
    let text = BASE
        .replace("timeZone: America/New_York", "timeZone: America/Gotham")
        .replace("defaultTimeZone: Europe/Berlin", "defaultTimeZone: Europe/Atlantis")
        .replace("maxTouches: 2", "maxTouches: 0");
    let d = Document::from_yaml(&format!(
        "{text}\n  acme:\n    companyId: c-acme\n    outreach: {{timeZone: Nowhere/Land, holidays: [\"2026-02-30\"]}}\n"
    ))
    .expect("parses");
    let errors = d.validate().expect_err("invalid");
    for path in [
        "baseline.cadences[0].sendWindow.timeZone",
        "baseline.upsellRules[0].guardrails.quietHours.defaultTimeZone",
        "baseline.portfolioContact.maxTouches",
        "companies.acme.outreach.timeZone",
        "companies.acme.outreach.holidays[0]",
    ] {
        assert!(errors.has_path(path), "{path}: {errors}");
    }
}

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().expect("instant").as_millisecond()
}

#[test]
fn a_send_window_holds_across_a_daylight_saving_change_in_two_zones() {
    let window = gtm_config::SendWindow {
        time_zone: "UTC".into(),
        start: "09:00".into(),
        end: "17:00".into(),
        weekdays: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(),
    };
    let ny = zone("America/New_York").expect("ny");
    let berlin = zone("Europe/Berlin").expect("berlin");
    // The US moves its clocks on 2026-03-08, Europe on 2026-03-29: in between, New York is
    // 4 hours behind UTC and Berlin still 1 hour ahead.
    // Friday 2026-03-06 (both on standard time): 13:30 UTC is 08:30 in New York (closed),
    // 14:30 in Berlin (open).
    assert!(!in_send_window(&window, &ny, ms("2026-03-06T13:30:00Z")));
    assert!(in_send_window(&window, &berlin, ms("2026-03-06T13:30:00Z")));
    // Monday 2026-03-09, after the US change: the same 13:30 UTC is 09:30 in New York (open).
    assert!(in_send_window(&window, &ny, ms("2026-03-09T13:30:00Z")));
    // 15:30 UTC in Berlin: 16:30 before Europe's change (open), 17:30 after it (closed).
    assert!(in_send_window(&window, &berlin, ms("2026-03-27T15:30:00Z")));
    assert!(!in_send_window(&window, &berlin, ms("2026-03-30T15:30:00Z")));
    // A fixed offset never moves: 08:30 at -05:00 both times.
    let fixed = zone("-05:00").expect("offset");
    assert!(!in_send_window(&window, &fixed, ms("2026-03-06T13:30:00Z")));
    assert!(!in_send_window(&window, &fixed, ms("2026-03-09T13:30:00Z")));
}
