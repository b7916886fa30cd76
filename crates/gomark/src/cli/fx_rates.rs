//! `gomark fx-rates load FILE`: dated exchange rates from a CSV file (`date,from,to,rate`,
//! e.g. `2026-03-31,EUR,USD,1.0842`), checked line by line before anything is sent, then
//! stored in batches. The portfolio roll-up converts each company into the reporting
//! currency with the latest rate on or before its as-of date.

use super::{CliError, Context};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Most rates in one request (the API's limit).
const BATCH: usize = 10_000;

#[derive(Debug, clap::Subcommand)]
pub enum FxRatesAction {
    /// Store the rates of a CSV file: `date,from,to,rate` per line (a header line is
    /// allowed); 1 `from` = `rate` `to` on `date` (YYYY-MM-DD, UTC).
    Load { file: PathBuf },
}

pub async fn run(ctx: &Context, action: FxRatesAction) -> Result<(), CliError> {
    let FxRatesAction::Load { file } = action;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", file.display())))?;
    let rates = parse(&text).map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    if rates.is_empty() {
        return Err(CliError::Invalid(format!("{}: no rates in the file", file.display())));
    }
    let mut stored = 0;
    for batch in rates.chunks(BATCH) {
        let answer = ctx.client.put(&["v1", "portfolio", "fx-rates"], &json!({ "rates": batch })).await?;
        stored += answer["stored"].as_u64().unwrap_or(0);
    }
    ctx.emit(&json!({ "stored": stored }), |_| format!("stored {stored} exchange rates\n"));
    Ok(())
}

/// The rates of a CSV text, or the first bad line named with what is wrong in it.
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut rates = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.to_ascii_lowercase().starts_with("date")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |what: String| format!("line {}: {what}", i + 1);
        let [date, from, to, rate] = fields[..] else {
            return Err(at(format!("expected 4 fields (date,from,to,rate), found {}", fields.len())));
        };
        if jiff::civil::Date::strptime("%Y-%m-%d", date).is_err() {
            return Err(at(format!("{date:?} is not a date (YYYY-MM-DD)")));
        }
        for code in [from, to] {
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(at(format!("{code:?} is not an ISO 4217 currency code")));
            }
        }
        if from.eq_ignore_ascii_case(to) {
            return Err(at(format!("a rate from {from} to itself")));
        }
        match gomark_proto::money::parse_decimal(rate) {
            Ok(r) if r > rust_decimal::Decimal::ZERO => {}
            _ => return Err(at(format!("{rate:?} is not a positive decimal number"))),
        }
        rates.push(json!({
            "date": date,
            "from": from.to_ascii_uppercase(),
            "to": to.to_ascii_uppercase(),
            "rate": rate,
        }));
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rates_and_names_the_bad_line() {
        let rates = parse("date,from,to,rate\n2026-03-31,eur,USD,1.0842\n\n# comment\n2026-04-01, GBP , USD , 1.27\n")
            .expect("valid");
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0], json!({"date": "2026-03-31", "from": "EUR", "to": "USD", "rate": "1.0842"}));
        for (text, needle) in [
            ("2026-03-31,EUR,USD", "line 1: expected 4 fields"),
            ("2026-02-30,EUR,USD,1.1", "line 1: \"2026-02-30\" is not a date"),
            ("2026-03-31,EURO,USD,1.1", "\"EURO\" is not an ISO 4217"),
            ("2026-03-31,EUR,EUR,1", "to itself"),
            ("2026-03-31,EUR,USD,1.1\n2026-03-31,EUR,USD,-1", "line 2: \"-1\" is not a positive"),
            ("2026-03-31,EUR,USD,1e3", "not a positive decimal"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
