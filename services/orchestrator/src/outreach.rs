//! The previous GoMark's cadence change on top of cadences as desired state: the company's
//! upsell cadence (the cadence of its first upsell rule, else the one keyed `upsell`) gets
//! the new body and delay on its first email step, as an overlay override in a new
//! revision (audited like any revision), rolled out to that company only.

use crate::revisions::{Revisions, retry_on_conflict};
use crate::rollout::Rollouts;
use crate::{Actor, Error, Result};
use gomark_platform::ErrorKind;
use gtm_config::StepType;

/// Where the change landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyCadenceChange {
    pub revision: i64,
    pub rollout_id: String,
    pub cadence_key: String,
}

pub async fn modify_upsell_cadence(
    revisions: &Revisions,
    rollouts: &Rollouts,
    actor: &Actor,
    company_id: &str,
    template: &str,
    delay_hours: u32,
) -> Result<LegacyCadenceChange> {
    if template.trim().is_empty() {
        return Err(Error::invalid("template", "is required"));
    }
    if delay_hours > 24 * 365 {
        return Err(Error::invalid("delay", "must be whole hours, at most 8760 (a year)"));
    }
    retry_on_conflict(|| modify_once(revisions, rollouts, actor, company_id, template, delay_hours)).await
}

/// One try of [`modify_upsell_cadence`], on the latest revision as it is read now.
async fn modify_once(
    revisions: &Revisions,
    rollouts: &Rollouts,
    actor: &Actor,
    company_id: &str,
    template: &str,
    delay_hours: u32,
) -> Result<LegacyCadenceChange> {
    let no_cadence = || {
        Error::kind_of(
            ErrorKind::FailedPrecondition,
            "the company has no upsell cadence in the configuration; declare one (cadences, upsellRules) first",
        )
    };
    let latest = revisions.latest().await?.ok_or_else(no_cadence)?;
    let mut document = latest.parse()?;
    let key = document
        .companies
        .iter()
        .find(|(_, o)| o.company_id == company_id)
        .map(|(k, _)| k.clone())
        .ok_or_else(no_cadence)?;
    let effective = document.effective(&key).map_err(|_| no_cadence())?;
    let cadence_key = effective.upsell_rules.first().map_or_else(|| "upsell".to_owned(), |r| r.cadence.clone());
    let mut cadence = effective.cadence(&cadence_key).cloned().ok_or_else(no_cadence)?;
    let step = cadence
        .steps
        .iter_mut()
        .find(|s| matches!(s.step_type, StepType::AutoEmail | StepType::ManualEmail))
        .ok_or_else(|| Error::kind_of(ErrorKind::FailedPrecondition, "the upsell cadence has no email step"))?;
    step.body = Some(template.to_owned());
    step.delay_hours = delay_hours;
    let overlay = document.companies.get_mut(&key).ok_or_else(no_cadence)?;
    match overlay.cadences.iter_mut().find(|c| c.key == cadence_key) {
        Some(slot) => *slot = cadence,
        None => overlay.cadences.push(cadence),
    }
    if let Err(errors) = document.validate() {
        let first = errors.errors.first().map_or_else(|| "template".to_owned(), ToString::to_string);
        return Err(Error::invalid("template", format!("the change would make the configuration invalid: {first}")));
    }
    let message = format!("legacy cadence change for {key}: first email of {cadence_key}, delay {delay_hours}h");
    let revision = revisions.create(actor, &document, &message, Some(latest.number), None).await?;
    let rollout = rollouts.start_for_edit(actor, revision.number, company_id).await?;
    Ok(LegacyCadenceChange { revision: revision.number, rollout_id: rollout.id, cadence_key })
}
