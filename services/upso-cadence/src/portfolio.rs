//! The portfolio view of a person: one customer is often a customer of several companies,
//! and the contact rules (suppression, cap, gap, exclusivity) hold across all of them.
//! A person is their normalised email.

use std::collections::HashMap;

/// The person an email denotes (one owner of the policy: gtm-config, which the configured
/// suppression list also reads through).
pub use gtm_config::outreach::person;

/// Why a person is on the portfolio suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuppressionKind {
    OptOut,
    DoNotContact,
    LegalHold,
}

impl SuppressionKind {
    pub const ALL: [SuppressionKind; 3] = [Self::OptOut, Self::DoNotContact, Self::LegalHold];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::DoNotContact => "do_not_contact",
            Self::LegalHold => "legal_hold",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One entry of the portfolio suppression list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub person: String,
    pub kind: SuppressionKind,
    /// The company whose customer opted out; empty when set for the whole portfolio.
    pub source_company_id: String,
    pub reason: String,
    pub actor: String,
    pub created_at: i64,
}

/// An enrollment of a person by some company (the touches ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub company_id: String,
    pub at: i64,
}

/// What the portfolio knows about the people a run considers, gathered once per run.
#[derive(Debug, Clone, Default)]
pub struct PortfolioFacts {
    pub rules: gtm_config::PortfolioContact,
    pub suppressed: HashMap<String, Suppression>,
    /// Touches per person since the start of the longest window a rule looks at.
    pub touches: HashMap<String, Vec<Touch>>,
    /// Per person, a running enrollment in another company: `(company, cadence)`.
    pub running_elsewhere: HashMap<String, (String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_whatever_the_spelling() {
        assert_eq!(person(" Ann+acme@X.Example "), "ann@x.example");
        assert_eq!(person("ann@x.example"), "ann@x.example");
        assert_eq!(person("not-an-email"), "not-an-email");
    }
}
