//! Money: an exact decimal amount with its ISO 4217 currency, the one money type of the
//! codebase, and its conversions to and from `gomark.common.v1.Money` (units + nanos).
//!
//! Floating point never carries an amount: `0.1 + 0.2` must be `0.3` in a roll-up of a
//! thousand CRMs, and a currency must travel with every amount so that USD, EUR and GBP
//! are never summed as one.

use crate::common::v1 as pb;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

pub use rust_decimal::Decimal as Amount;

/// Billionths: `google.type.Money`'s `nanos` resolution.
const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// Why a currency code or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency code must be three letters (ISO 4217)")]
    Currency,
    #[error("nanos must be within ±999,999,999 and have the sign of units")]
    Nanos,
    #[error("amount is too large")]
    Overflow,
    #[error("amounts in different currencies ({0} and {1}) cannot be added")]
    Mismatch(Currency, Currency),
    #[error("not a decimal number")]
    Decimal,
}

/// An ISO 4217 currency code: three ASCII letters, kept upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// What a company reports in until told otherwise.
    pub const USD: Currency = Currency(*b"USD");

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored (see `from_str`).
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    /// Accepts any case ("eur" is EUR); anything but three ASCII letters is refused.
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        let bytes: [u8; 3] = s.trim().as_bytes().try_into().map_err(|_| MoneyError::Currency)?;
        if !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(MoneyError::Currency);
        }
        Ok(Self(bytes.map(|b| b.to_ascii_uppercase())))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An exact amount in one currency. In JSON: `{"amount": "1234.50", "currency": "EUR"}`
/// (the amount a string, so no JSON parser turns it into a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self { amount: Decimal::ZERO, currency }
    }

    /// `self + other`, refused across currencies or on overflow.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::Mismatch(self.currency, other.currency));
        }
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }

    /// This amount in `to`, at `rate` (1 of `self.currency` = `rate` of `to`), rounded to
    /// billionths (the wire's resolution).
    pub fn convert(self, rate: Decimal, to: Currency) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_mul(rate).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount: round_to_nanos(amount), currency: to })
    }

    /// The proto form; refused when the units do not fit an i64.
    pub fn to_proto(&self) -> Result<pb::Money, MoneyError> {
        let rounded = round_to_nanos(self.amount);
        let units_part = rounded.trunc();
        let units = units_part.to_i64().ok_or(MoneyError::Overflow)?;
        let nanos = ((rounded - units_part) * Decimal::from(NANOS_PER_UNIT)).to_i32().ok_or(MoneyError::Overflow)?;
        Ok(pb::Money { currency_code: self.currency.to_string(), units, nanos })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Rounds half away from zero to nine decimal places, the proto's resolution.
fn round_to_nanos(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(9, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

impl TryFrom<&pb::Money> for Money {
    type Error = MoneyError;

    fn try_from(m: &pb::Money) -> Result<Self, MoneyError> {
        let currency: Currency = m.currency_code.parse()?;
        Ok(Money { amount: amount_of(m)?, currency })
    }
}

/// The amount `units` and `nanos` stand for, whatever the currency code says.
fn amount_of(m: &pb::Money) -> Result<Decimal, MoneyError> {
    let signs_agree = (m.units >= 0 && m.nanos >= 0) || (m.units <= 0 && m.nanos <= 0);
    if m.nanos.unsigned_abs() >= NANOS_PER_UNIT as u32 || !signs_agree {
        return Err(MoneyError::Nanos);
    }
    Ok((Decimal::from(m.units) + Decimal::new(i64::from(m.nanos), 9)).normalize())
}

impl TryFrom<pb::Money> for Money {
    type Error = MoneyError;

    fn try_from(m: pb::Money) -> Result<Self, MoneyError> {
        Money::try_from(&m)
    }
}

/// A decimal from text ("1234.50", "-0.5"); exponents and floats are refused.
pub fn parse_decimal(s: &str) -> Result<Decimal, MoneyError> {
    Decimal::from_str_exact(s.trim()).map_err(|_| MoneyError::Decimal)
}

/// A deal's amount from an event: `amount_money` when present, else the deprecated double
/// `amount`. An empty currency code in `amount_money`, like the double, means the deal has
/// none (`None`: the reader counts it in its company's currency). Reading the empty code now
/// lets the next release's writer fill `amount_money` for every deal and drop the double
/// without breaking readers of this one.
#[allow(deprecated)]
pub fn deal_amount(d: &crate::events::v1::DealUpserted) -> Result<Option<(Decimal, Option<Currency>)>, MoneyError> {
    if let Some(m) = &d.amount_money {
        if m.currency_code.is_empty() {
            return Ok(Some((amount_of(m)?, None)));
        }
        let m = Money::try_from(m)?;
        return Ok(Some((m.amount, Some(m.currency))));
    }
    match d.amount {
        // The double came from HubSpot's text; its shortest representation is that text.
        Some(x) => Ok(Some((Decimal::from_str(&x.to_string()).map_err(|_| MoneyError::Decimal)?, None))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        "eur".parse().expect("currency")
    }

    #[test]
    fn currency_codes_are_three_letters_upper_cased() {
        assert_eq!(eur().as_str(), "EUR");
        assert!("EURO".parse::<Currency>().is_err());
        assert!("E1R".parse::<Currency>().is_err());
        assert!("".parse::<Currency>().is_err());
    }

    #[test]
    fn proto_round_trip_is_exact() {
        for text in ["1234.50", "-1234.56", "0.000000001", "-0.5", "0", "9223372036854775807.999999999"] {
            let m = Money::new(parse_decimal(text).expect("decimal"), eur());
            let p = m.to_proto().expect("fits");
            assert_eq!(Money::try_from(&p).expect("valid").amount, m.amount, "{text}");
        }
        let p = Money::new(parse_decimal("-1.25").expect("decimal"), eur()).to_proto().expect("fits");
        assert_eq!((p.units, p.nanos), (-1, -250_000_000));
    }

    #[test]
    fn bad_proto_money_is_refused() {
        let m = |units, nanos| pb::Money { currency_code: "USD".into(), units, nanos };
        assert_eq!(Money::try_from(&m(1, -1)), Err(MoneyError::Nanos));
        assert_eq!(Money::try_from(&m(0, 1_000_000_000)), Err(MoneyError::Nanos));
        assert!(Money::new(Decimal::MAX, eur()).to_proto().is_err());
    }

    #[test]
    fn json_shape_is_string_amount_and_code() {
        let m = Money::new(parse_decimal("1234.50").expect("decimal"), eur());
        let json = serde_json::to_value(m).expect("json");
        assert_eq!(json, serde_json::json!({"amount": "1234.50", "currency": "EUR"}));
        assert_eq!(serde_json::from_value::<Money>(json).expect("back"), m);
    }

    #[test]
    fn adding_across_currencies_is_refused() {
        let a = Money::new(Decimal::ONE, eur());
        assert!(a.checked_add(Money::new(Decimal::ONE, Currency::USD)).is_err());
        assert_eq!(a.checked_add(a).expect("same").amount, Decimal::TWO);
    }

    #[test]
    #[allow(deprecated)]
    fn old_events_fall_back_to_the_double() {
        let mut d = crate::events::v1::DealUpserted { amount: Some(1234.5), ..Default::default() };
        assert_eq!(deal_amount(&d), Ok(Some((parse_decimal("1234.5").expect("decimal"), None))));
        d.amount_money = Some(pb::Money { currency_code: "GBP".into(), units: 7, nanos: 10_000_000 });
        let (amount, currency) = deal_amount(&d).expect("valid").expect("amount");
        assert_eq!((amount.to_string(), currency.map(|c| c.to_string())), ("7.01".into(), Some("GBP".into())));
        assert_eq!(deal_amount(&Default::default()), Ok(None));
        d.amount_money = Some(pb::Money { currency_code: String::new(), units: -3, nanos: -500_000_000 });
        assert_eq!(deal_amount(&d), Ok(Some((parse_decimal("-3.5").expect("decimal"), None))));
        d.amount_money = Some(pb::Money { currency_code: String::new(), units: 3, nanos: -5 });
        assert_eq!(deal_amount(&d), Err(MoneyError::Nanos));
    }
}
