//! Cadences as desired state: plan (diff desired against what Upso holds), apply, and the
//! "edited in Upso" signal that makes a difference drift rather than pending work.

use crate::outreach::{OutreachVendor, RemoteCadence};
use crate::store::{ManagedCadence, OutreachConfig, Store};
use crate::{Error, Result};
use gomark_platform::ErrorKind;
use gtm_config::Cadence;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CadenceOp {
    Create,
    Update,
    Archive,
}

impl CadenceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CadenceOp::Create => "create",
            CadenceOp::Update => "update",
            CadenceOp::Archive => "archive",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CadenceAction {
    pub key: String,
    pub op: CadenceOp,
    /// The Upso cadence to update or archive.
    pub upso_id: Option<String>,
    pub fields: Vec<&'static str>,
    pub edited_in_upso: bool,
    /// What to write, for create and update.
    pub desired: Option<Cadence>,
}

impl CadenceAction {
    /// A digest of everything the action would do: a saved plan approves actions by it.
    pub fn id(&self) -> String {
        gtm_config::wire::digest(&serde_json::json!({
            "key": self.key,
            "op": self.op.as_str(),
            "upsoId": self.upso_id,
            "fields": self.fields,
            "editedInUpso": self.edited_in_upso,
            "desired": self.desired,
        }))
    }
}

impl std::fmt::Display for CadenceAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.op {
            CadenceOp::Create => "+",
            CadenceOp::Update => "~",
            CadenceOp::Archive => "-",
        };
        write!(f, "{sign} cadence {}", self.key)?;
        if !self.fields.is_empty() {
            write!(f, " ({})", self.fields.join(", "))?;
        }
        if self.edited_in_upso {
            f.write_str(" [edited in Upso]")?;
        }
        Ok(())
    }
}

/// The fields of `desired` that `actual` does not match (the key is GoMark's, not compared).
pub fn differing_fields(desired: &Cadence, actual: &Cadence) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if desired.name != actual.name {
        fields.push("name");
    }
    if desired.tags != actual.tags {
        fields.push("tags");
    }
    if desired.send_window != actual.send_window {
        fields.push("sendWindow");
    }
    if desired.exit_on_reply != actual.exit_on_reply || desired.exit_on_bounce != actual.exit_on_bounce {
        fields.push("exitRules");
    }
    if desired.steps != actual.steps {
        fields.push("steps");
    }
    fields
}

/// What it takes to make `remote` match `desired`, given what GoMark last applied.
///
/// A desired cadence is matched to Upso's by the id GoMark recorded, else by its
/// `gomark:<key>` tag (so GoMark's own state can be rebuilt from Upso). Managed or tagged
/// cadences that are no longer desired are archived; cadences GoMark never managed are
/// left alone.
pub fn plan(desired: &[Cadence], managed: &[ManagedCadence], remote: &[RemoteCadence]) -> Vec<CadenceAction> {
    let mut actions = Vec::new();
    let find_remote = |key: &str| -> Option<(&RemoteCadence, Option<&ManagedCadence>)> {
        let recorded = managed.iter().find(|m| m.key == key && !m.archived);
        if let Some(m) = recorded
            && let Some(r) = remote.iter().find(|r| r.id == m.upso_id && r.active)
        {
            return Some((r, Some(m)));
        }
        remote.iter().find(|r| r.active && r.tagged_key.as_deref() == Some(key)).map(|r| (r, None))
    };
    for d in desired {
        match find_remote(&d.key) {
            None => actions.push(CadenceAction {
                key: d.key.clone(),
                op: CadenceOp::Create,
                upso_id: None,
                fields: Vec::new(),
                edited_in_upso: false,
                desired: Some(d.clone()),
            }),
            Some((r, m)) => {
                let fields = differing_fields(d, &r.definition);
                if !fields.is_empty() {
                    actions.push(CadenceAction {
                        key: d.key.clone(),
                        op: CadenceOp::Update,
                        upso_id: Some(r.id.clone()),
                        fields,
                        edited_in_upso: m.is_some_and(|m| m.upso_version != r.version),
                        desired: Some(d.clone()),
                    });
                }
            }
        }
    }
    for r in remote.iter().filter(|r| r.active) {
        let key = managed.iter().find(|m| m.upso_id == r.id).map(|m| m.key.clone()).or_else(|| r.tagged_key.clone());
        let Some(key) = key else { continue };
        if !desired.iter().any(|d| d.key == key) {
            actions.push(CadenceAction {
                key,
                op: CadenceOp::Archive,
                upso_id: Some(r.id.clone()),
                fields: Vec::new(),
                edited_in_upso: false,
                desired: None,
            });
        }
    }
    actions
}

/// Plans and applies one company's cadences.
#[derive(Clone)]
pub struct Cadences {
    store: Store,
    vendor: Arc<dyn OutreachVendor>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub created: u32,
    pub updated: u32,
    pub archived: u32,
    /// The actions performed, in order.
    pub performed: Vec<CadenceAction>,
}

impl Cadences {
    pub fn new(store: Store, vendor: Arc<dyn OutreachVendor>) -> Self {
        Self { store, vendor }
    }

    /// The company's token, or why there is none.
    async fn token(&self, company_id: &str) -> Result<Option<upso_client::UpsoToken>> {
        self.store.token(company_id).await
    }

    pub async fn plan(&self, company_id: &str, desired: &OutreachConfig) -> Result<Vec<CadenceAction>> {
        let Some(token) = self.token(company_id).await? else {
            return no_account(desired);
        };
        let managed = self.store.managed(company_id).await?;
        let remote = self.vendor.cadences(&token).await?;
        Ok(plan(&desired.cadences, &managed, &remote))
    }

    /// Makes Upso match `desired` and keeps `desired` as the engine's configuration.
    /// Re-reads Upso first, so running it again after a crash repeats no write. With
    /// `approved` (a saved plan's action ids), an action outside it stops the run before
    /// any write: the plan is stale.
    pub async fn apply(
        &self,
        company_id: &str,
        desired: &OutreachConfig,
        revision: i64,
        approved: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<Applied> {
        let mut applied = Applied::default();
        let Some(token) = self.token(company_id).await? else {
            no_account::<()>(desired)?;
            let mut tx = self.store.db().begin().await?;
            self.store.save_config(&mut tx, company_id, revision, desired).await?;
            tx.commit().await?;
            return Ok(applied);
        };
        let managed = self.store.managed(company_id).await?;
        let remote = self.vendor.cadences(&token).await?;
        let actions = plan(&desired.cadences, &managed, &remote);
        if let Some(approved) = approved
            && let Some(extra) = actions.iter().find(|a| !approved.contains(&a.id()))
        {
            return Err(Error::kind_of(
                ErrorKind::FailedPrecondition,
                format!("plan is stale: Upso changed since the plan was made and now needs `{extra}`; plan again"),
            ));
        }
        for action in &actions {
            let written = match (action.op, &action.desired, &action.upso_id) {
                (CadenceOp::Create, Some(d), _) => {
                    applied.created += 1;
                    Some(self.vendor.create_cadence(&token, d).await?)
                }
                (CadenceOp::Update, Some(d), Some(id)) => {
                    applied.updated += 1;
                    Some(self.vendor.update_cadence(&token, id, d).await?)
                }
                (CadenceOp::Archive, _, Some(id)) => {
                    applied.archived += 1;
                    self.vendor.archive_cadence(&token, id).await?;
                    None
                }
                _ => continue,
            };
            let before = managed.iter().find(|m| m.key == action.key).map(|m| serde_json::json!(m.definition));
            let row = match &written {
                Some(r) => ManagedCadence {
                    key: action.key.clone(),
                    upso_id: r.id.clone(),
                    definition: action.desired.clone().unwrap_or_else(|| r.definition.clone()),
                    upso_version: r.version,
                    archived: false,
                },
                None => ManagedCadence {
                    key: action.key.clone(),
                    upso_id: action.upso_id.clone().unwrap_or_default(),
                    definition: managed
                        .iter()
                        .find(|m| m.key == action.key)
                        .map(|m| m.definition.clone())
                        .unwrap_or_else(|| empty_cadence(&action.key)),
                    upso_version: 0,
                    archived: true,
                },
            };
            let mut tx = self.store.db().begin().await?;
            self.store.save_managed(&mut tx, company_id, &row, revision).await?;
            crate::store::audit(
                &mut tx,
                company_id,
                "system:upso-cadence",
                &format!("cadence.{}", action.op.as_str()),
                &format!("cadence/{}", action.key),
                before,
                action.desired.as_ref().map(|d| serde_json::json!({"revision": revision, "definition": d, "editedInUpso": action.edited_in_upso})),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(company_id, cadence = %action.key, op = action.op.as_str(), revision, "cadence applied to upso");
            applied.performed.push(action.clone());
        }
        // Cadences that already matched but were never recorded (found by tag) are adopted,
        // so the next plan can tell a hand edit from pending work.
        let remote = if actions.is_empty() { remote } else { self.vendor.cadences(&token).await? };
        let recorded = self.store.managed(company_id).await?;
        let mut tx = self.store.db().begin().await?;
        for d in &desired.cadences {
            let known = recorded.iter().find(|m| m.key == d.key && !m.archived);
            let current = known
                .and_then(|m| remote.iter().find(|r| r.id == m.upso_id && r.active))
                .or_else(|| remote.iter().find(|r| r.active && r.tagged_key.as_deref() == Some(d.key.as_str())));
            if let Some(r) = current
                && known.is_none_or(|m| m.upso_version != r.version || m.upso_id != r.id)
                && differing_fields(d, &r.definition).is_empty()
            {
                let row = ManagedCadence {
                    key: d.key.clone(),
                    upso_id: r.id.clone(),
                    definition: d.clone(),
                    upso_version: r.version,
                    archived: false,
                };
                self.store.save_managed(&mut tx, company_id, &row, revision).await?;
            }
        }
        self.store.save_config(&mut tx, company_id, revision, desired).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// The Upso id of the company's cadence `key`, as GoMark last applied it.
    pub async fn upso_id(&self, company_id: &str, key: &str) -> Result<Option<String>> {
        Ok(self.store.managed(company_id).await?.into_iter().find(|m| m.key == key && !m.archived).map(|m| m.upso_id))
    }
}

fn empty_cadence(key: &str) -> Cadence {
    Cadence {
        key: key.to_owned(),
        name: String::new(),
        tags: Vec::new(),
        send_window: None,
        exit_on_reply: true,
        exit_on_bounce: true,
        steps: Vec::new(),
        sender: None,
        variables: Default::default(),
        localizable: None,
    }
}

/// Without an Upso account there is nothing to plan, unless cadences are desired.
fn no_account<T: Default>(desired: &OutreachConfig) -> Result<T> {
    if desired.cadences.is_empty() {
        Ok(T::default())
    } else {
        Err(Error::kind_of(
            ErrorKind::FailedPrecondition,
            "the company has no Upso account registered; its cadences cannot be planned or applied",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gtm_config::{CadenceStep, StepType};

    fn cadence(key: &str, delay: u32) -> Cadence {
        Cadence {
            key: key.into(),
            name: format!("{key} cadence"),
            tags: vec![],
            send_window: None,
            exit_on_reply: true,
            exit_on_bounce: true,
            steps: vec![CadenceStep {
                step_type: StepType::AutoEmail,
                delay_hours: delay,
                subject: Some("Hi".into()),
                body: Some("Hello {{firstName}}".into()),
                instructions: None,
            }],
            sender: None,
            variables: Default::default(),
            localizable: None,
        }
    }

    fn remote(id: &str, c: &Cadence, version: u64) -> RemoteCadence {
        RemoteCadence { id: id.into(), version, active: true, tagged_key: Some(c.key.clone()), definition: c.clone() }
    }

    #[test]
    fn plan_creates_updates_and_archives_by_key() {
        let upsell = cadence("upsell", 0);
        let old = cadence("old", 0);
        let managed = vec![
            ManagedCadence {
                key: "upsell".into(),
                upso_id: "c1".into(),
                definition: upsell.clone(),
                upso_version: 1,
                archived: false,
            },
            ManagedCadence {
                key: "old".into(),
                upso_id: "c2".into(),
                definition: old.clone(),
                upso_version: 1,
                archived: false,
            },
        ];
        let remote_now = vec![remote("c1", &upsell, 1), remote("c2", &old, 1)];
        let desired = vec![cadence("upsell", 48), cadence("renewal", 0)];
        let actions = plan(&desired, &managed, &remote_now);
        let summary: Vec<String> = actions.iter().map(ToString::to_string).collect();
        assert_eq!(summary, vec!["~ cadence upsell (steps)", "+ cadence renewal", "- cadence old"]);
        assert!(!actions[0].edited_in_upso, "Upso's version is the one GoMark wrote");
    }

    #[test]
    fn a_hand_edit_shows_as_edited_in_upso_and_untouched_cadences_plan_nothing() {
        let upsell = cadence("upsell", 0);
        let managed = vec![ManagedCadence {
            key: "upsell".into(),
            upso_id: "c1".into(),
            definition: upsell.clone(),
            upso_version: 1,
            archived: false,
        }];
        assert!(plan(std::slice::from_ref(&upsell), &managed, &[remote("c1", &upsell, 1)]).is_empty());
        let edited = cadence("upsell", 72);
        let actions = plan(std::slice::from_ref(&upsell), &managed, &[remote("c1", &edited, 2)]);
        assert_eq!(actions.len(), 1);
        assert!(actions[0].edited_in_upso);
        // A cadence nobody at GoMark manages is never archived.
        let foreign = RemoteCadence { tagged_key: None, ..remote("c9", &cadence("theirs", 0), 1) };
        assert!(plan(&[], &[], &[foreign]).is_empty());
    }
}
