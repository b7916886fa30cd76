//! Import: adopt what portals already hold as their companies' overlays, in one new
//! revision, so a portfolio can be brought under GoMark (or rebuilt) in one step.

use crate::planning::{Planner, Progress};
use crate::revisions::{RevisionRow, Revisions};
use crate::store::{CompanyRow, Store};
use crate::{Actor, Error, Result};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use gomark_platform::PublicError;
use gomark_proto::hubspot_sync::v1::ImportedPortal;
use gomark_proto::orchestrator::v1 as pb;
use gtm_config::Document;

pub struct Importer<'a> {
    pub store: &'a Store,
    pub planner: &'a Planner,
    pub revisions: &'a Revisions,
}

/// A document key for a company: its name as a slug, unique in `document`.
pub(crate) fn company_key(document: &Document, company: &CompanyRow) -> String {
    if let Some((key, _)) = document.companies.iter().find(|(_, o)| o.company_id == company.id) {
        return key.clone();
    }
    let mut slug: String = company
        .name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.truncate(56);
    if slug.is_empty() || !slug.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        slug = "company".into();
    }
    let mut key = slug.clone();
    let mut n = 2;
    while document.companies.contains_key(&key) {
        key = format!("{slug}-{n}");
        n += 1;
    }
    key
}

impl Importer<'_> {
    async fn companies(&self, ids: &[String]) -> Result<Vec<CompanyRow>> {
        if !ids.is_empty() {
            let mut found = Vec::new();
            for id in ids {
                found.push(
                    self.store.get_company(id).await?.ok_or_else(|| PublicError::not_found(format!("company {id}")))?,
                );
            }
            return Ok(found);
        }
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_companies(after.as_deref(), 500).await?;
            let done = page.len() < 500;
            after = page.last().map(|c| c.id.clone());
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    pub async fn run(
        &self,
        actor: &Actor,
        company_ids: &[String],
        message: &str,
        progress: Option<&tokio::sync::watch::Sender<Progress>>,
    ) -> Result<(RevisionRow, Vec<pb::ImportedCompany>)> {
        let companies = self.companies(company_ids).await?;
        if companies.is_empty() {
            return Err(Error::invalid("companyIds", "there is no company to import"));
        }
        let mut document = match self.revisions.latest().await? {
            Some(latest) => latest.parse()?,
            None => Document::default(),
        };
        if let Some(progress) = progress {
            let total = u32::try_from(companies.len()).unwrap_or(u32::MAX);
            progress.send_replace(Progress { done: 0, total });
        }
        // Every portal is read first, side by side (each against its own budget).
        let portals: Vec<(String, String)> = companies.iter().map(|c| (c.id.clone(), c.name.clone())).collect();
        let observed_all: Vec<ImportedPortal> = stream::iter(portals)
            .map(|(id, name)| {
                async move {
                    let observed = self.planner.import_portal(&id).await.map_err(|status| {
                        let why = PublicError::from(status).message;
                        Error::Public(PublicError::unavailable(format!("the HubSpot portal of {name} ({why})")))
                    })?;
                    if let Some(progress) = progress {
                        progress.send_modify(|p| p.done += 1);
                    }
                    Ok::<_, Error>(observed)
                }
                .boxed()
            })
            .buffered(crate::planning::PLAN_CONCURRENCY)
            .try_collect()
            .await?;
        let mut report = Vec::new();
        for (company, observed) in companies.iter().zip(observed_all) {
            let key = company_key(&document, company);
            let deal_properties = observed
                .deal_properties
                .iter()
                .cloned()
                .map(gtm_config::wire::property_from_proto)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid("document", format!("hubspot-sync sent an unusable property: {e}")))?;
            report.push(pb::ImportedCompany {
                company_id: company.id.clone(),
                company_key: key.clone(),
                deal_properties: observed.deal_properties.len() as u32,
                property_groups: observed.property_groups.len() as u32,
                pipelines: observed.pipelines.len() as u32,
                skipped: observed.skipped.clone(),
            });
            // Import adopts what the portal holds (groups, properties, pipelines); what the
            // company declared beyond it (settings, stage mapping, currency, tags, outreach,
            // rules) survives a re-import.
            let mut overlay = document.companies.get(&key).cloned().unwrap_or_default();
            overlay.company_id.clone_from(&company.id);
            overlay.property_groups =
                observed.property_groups.iter().cloned().map(gtm_config::wire::group_from_proto).collect();
            overlay.deal_properties = deal_properties;
            overlay.pipelines = observed.pipelines.iter().cloned().map(gtm_config::wire::pipeline_from_proto).collect();
            // Baseline items the portal does not have are removed for this company, so the
            // revision describes the portal exactly.
            overlay.remove_deal_properties = document
                .baseline
                .deal_properties
                .iter()
                .filter(|p| !observed.deal_properties.iter().any(|o| o.name == p.name))
                .map(|p| p.name.clone())
                .collect();
            overlay.remove_pipelines = document
                .baseline
                .pipelines
                .iter()
                .filter(|p| !observed.pipelines.iter().any(|o| o.label.trim().eq_ignore_ascii_case(p.label.trim())))
                .map(|p| p.id.clone())
                .collect();
            document.companies.insert(key, overlay);
        }
        if let Err(errors) = document.validate() {
            let all: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
            return Err(Error::invalid(
                "document",
                format!("the imported configuration is invalid: {}", all.join("; ")),
            ));
        }
        let message = if message.trim().is_empty() {
            format!("import {} companies from HubSpot", companies.len())
        } else {
            message.to_owned()
        };
        let revision = self.revisions.create(actor, &document, &message, None, None).await?;
        // The revision describes these portals as they are: it is what they hold now, and
        // what drift is measured against from here on.
        let mut tx = self.store.db().begin().await?;
        for company in &companies {
            self.store.set_applied_revision(&mut tx, &company.id, revision.number).await?;
        }
        tx.commit().await?;
        Ok((revision, report))
    }
}
