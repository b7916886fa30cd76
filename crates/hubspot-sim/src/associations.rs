//! Associations between deals and contacts/companies (CRM associations v4), with HubSpot's
//! default (unlabelled) association types: deal→contact 3 (contact→deal 4), deal→company 341
//! (company→deal 342), and the "Primary" deal→company 5 (company→deal 6). The simulator keeps
//! no contacts or companies, so their ids are taken as given; the deal must exist.
//!
//! Each association is stored once, from the deal's side, with its type ids; reads from a
//! contact or company see the reverse types. Adding or removing one records a
//! `deal.associationChange` event.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::events::ChangeKind;
use crate::portal::Portal;

/// The object types associations connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Deal,
    Contact,
    Company,
}

impl Kind {
    /// `deals`/`0-3`, `contacts`/`0-1`, `companies`/`0-2` (singular and upper case too).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        match raw.to_ascii_lowercase().as_str() {
            "deals" | "deal" | "0-3" => Ok(Self::Deal),
            "contacts" | "contact" | "0-1" => Ok(Self::Contact),
            "companies" | "company" | "0-2" => Ok(Self::Company),
            _ => Err(ApiError::validation(format!(
                "Unknown object type '{raw}' (hubspot-sim associates deals with contacts and companies)"
            ))),
        }
    }

    /// The kind a deal→X HubSpot-defined association type points to.
    pub fn for_deal_type(type_id: u32) -> Option<Self> {
        [Self::Contact, Self::Company].into_iter().find(|kind| pairs(*kind).iter().any(|(d, _)| d.type_id == type_id))
    }

    pub fn type_id(self) -> &'static str {
        match self {
            Self::Deal => "0-3",
            Self::Contact => "0-1",
            Self::Company => "0-2",
        }
    }

    fn upper(self) -> &'static str {
        match self {
            Self::Deal => "DEAL",
            Self::Contact => "CONTACT",
            Self::Company => "COMPANY",
        }
    }
}

/// One association type between two kinds, as HubSpot lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssocType {
    pub type_id: u32,
    pub label: Option<&'static str>,
}

/// `(deal→other, other→deal)` type pairs between deals and `other`, the default first.
fn pairs(other: Kind) -> &'static [(AssocType, AssocType)] {
    const CONTACT: &[(AssocType, AssocType)] =
        &[(AssocType { type_id: 3, label: None }, AssocType { type_id: 4, label: None })];
    const COMPANY: &[(AssocType, AssocType)] = &[
        (AssocType { type_id: 341, label: None }, AssocType { type_id: 342, label: None }),
        (AssocType { type_id: 5, label: Some("Primary") }, AssocType { type_id: 6, label: Some("Primary") }),
    ];
    match other {
        Kind::Contact => CONTACT,
        Kind::Company => COMPANY,
        Kind::Deal => &[],
    }
}

/// The association types from `from` to `to` (HubSpot-defined only).
pub(crate) fn types(from: Kind, to: Kind) -> Vec<AssocType> {
    match (from, to) {
        (Kind::Deal, other) => pairs(other).iter().map(|p| p.0).collect(),
        (other, Kind::Deal) => pairs(other).iter().map(|p| p.1).collect(),
        _ => Vec::new(),
    }
}

/// One stored association: deal, other kind, other id, deal→other type id.
pub(crate) type Link = (u64, Kind, u64, u32);

/// Renders association types for `associationTypes` lists.
pub(crate) fn render_types(types: &[AssocType]) -> Vec<Value> {
    types.iter().map(|t| json!({"category": "HUBSPOT_DEFINED", "typeId": t.type_id, "label": t.label})).collect()
}

impl Portal {
    /// Orients a `(from, from_id, to, to_id)` pair as `(deal id, other kind, other id)`.
    fn orient(&self, from: Kind, from_id: u64, to: Kind, to_id: u64) -> Result<(u64, Kind, u64), ApiError> {
        let (deal, other, other_id) = match (from, to) {
            (Kind::Deal, other) if other != Kind::Deal => (from_id, other, to_id),
            (other, Kind::Deal) if other != Kind::Deal => (to_id, other, from_id),
            _ => {
                return Err(ApiError::validation(format!(
                    "hubspot-sim only associates deals with contacts or companies, not {} with {}",
                    from.upper(),
                    to.upper()
                )));
            }
        };
        if self.find_deal(&deal.to_string(), false).is_none() {
            return Err(crate::deals::deal_not_found(&deal.to_string()));
        }
        Ok((deal, other, other_id))
    }

    /// Adds associations of the given types (deal→other type ids, or the reverse ones when
    /// `from` is not a deal; `None` = the default type). Returns the deal→other type ids.
    pub fn associate(
        &mut self,
        from: Kind,
        from_id: u64,
        to: Kind,
        to_id: u64,
        type_ids: Option<&[u32]>,
    ) -> Result<Vec<u32>, ApiError> {
        let (deal, other, other_id) = self.orient(from, from_id, to, to_id)?;
        let from_deal = from == Kind::Deal;
        let mut chosen = Vec::new();
        match type_ids {
            None => chosen.push(pairs(other)[0].0.type_id),
            Some(ids) => {
                for id in ids {
                    let pair = pairs(other)
                        .iter()
                        .find(|(d, o)| if from_deal { d.type_id == *id } else { o.type_id == *id })
                        .ok_or_else(|| {
                            ApiError::validation(format!(
                                "associationTypeId {id} is not a HUBSPOT_DEFINED type from {} to {}",
                                from.upper(),
                                to.upper()
                            ))
                        })?;
                    chosen.push(pair.0.type_id);
                }
            }
        }
        for type_id in &chosen {
            if self.associations.insert((deal, other, other_id, *type_id)) {
                self.record_change(
                    deal,
                    crate::model::now_ms(),
                    ChangeKind::AssociationChange {
                        association_type: format!("DEAL_TO_{}", other.upper()),
                        to_id: other_id,
                        removed: false,
                    },
                );
            }
        }
        Ok(chosen)
    }

    /// Removes every association between the pair; whether there was one.
    pub fn dissociate(&mut self, from: Kind, from_id: u64, to: Kind, to_id: u64) -> Result<bool, ApiError> {
        let (deal, other, other_id) = self.orient(from, from_id, to, to_id)?;
        let before = self.associations.len();
        self.associations.retain(|(d, k, o, _)| !(*d == deal && *k == other && *o == other_id));
        let removed = self.associations.len() != before;
        if removed {
            self.record_change(
                deal,
                crate::model::now_ms(),
                ChangeKind::AssociationChange {
                    association_type: format!("DEAL_TO_{}", other.upper()),
                    to_id: other_id,
                    removed: true,
                },
            );
        }
        Ok(removed)
    }

    /// `(other id, association types as seen from `from`)` of object `id`, ordered by id.
    pub fn associations_of(&self, from: Kind, id: u64, to: Kind) -> Vec<(u64, Vec<AssocType>)> {
        let mut out: Vec<(u64, Vec<AssocType>)> = Vec::new();
        let links: BTreeSet<(u64, u32)> = match (from, to) {
            (Kind::Deal, other) => self
                .associations
                .iter()
                .filter(|(d, k, _, _)| *d == id && *k == other)
                .map(|(_, _, o, t)| (*o, *t))
                .collect(),
            (other, Kind::Deal) => self
                .associations
                .iter()
                .filter(|(_, k, o, _)| *k == other && *o == id)
                .map(|(d, _, _, t)| (*d, *t))
                .collect(),
            _ => BTreeSet::new(),
        };
        let other = if from == Kind::Deal { to } else { from };
        for (target, type_id) in links {
            let pair = pairs(other).iter().find(|(d, _)| d.type_id == type_id);
            let Some((deal_side, other_side)) = pair else { continue };
            let shown = if from == Kind::Deal { *deal_side } else { *other_side };
            match out.last_mut() {
                Some((last, types)) if *last == target => types.push(shown),
                _ => out.push((target, vec![shown])),
            }
        }
        out
    }
}
