//! Refreshes OAuth grants before they expire (HubSpot: refresh ahead of `expires_in`, not
//! on a 401).

use crate::credentials::Credential;
use crate::portals::Portals;
use gomark_platform::Shutdown;
use hubspot_client::{AccessToken, HubSpotClient};
use std::time::Duration;
use tracing::Instrument;

/// Grants expiring within this are refreshed.
const AHEAD: Duration = Duration::from_secs(10 * 60);
const TICK: Duration = Duration::from_secs(60);

pub struct OAuthRefresher {
    pub portals: Portals,
    pub client: HubSpotClient,
    pub client_id: String,
    pub client_secret: String,
}

impl OAuthRefresher {
    /// Refreshes every grant close to expiry; returns how many were refreshed.
    pub async fn refresh_due(&self) -> usize {
        let due = match self.portals.expiring(gomark_storage::now_ms() + AHEAD.as_millis() as i64).await {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list OAuth grants to refresh");
                return 0;
            }
        };
        let mut refreshed = 0;
        for portal in due {
            let Credential::OAuth { refresh_token, .. } = &portal.credential else { continue };
            let refresh = AccessToken::new(refresh_token.clone()).for_portal(portal.portal_id.clone());
            match self.client.refresh_access_token(&self.client_id, &self.client_secret, &refresh).await {
                Ok(tokens) => {
                    let credential = Credential::OAuth {
                        access_token: tokens.access_token.expose().to_owned(),
                        refresh_token: tokens.refresh_token.expose().to_owned(),
                        expires_at_ms: gomark_storage::now_ms() + tokens.expires_in.as_millis() as i64,
                    };
                    match self.portals.register(&portal.company_id, &portal.portal_id, &credential).await {
                        Ok(()) => refreshed += 1,
                        Err(err) => {
                            tracing::error!(company_id = %portal.company_id, error = %err, "refreshed token not stored")
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(company_id = %portal.company_id, portal_id = %portal.portal_id, error = %err, "OAuth refresh failed")
                }
            }
        }
        refreshed
    }

    pub async fn run(self, shutdown: Shutdown) {
        if self.client_id.is_empty() {
            return;
        }
        while !shutdown.is_triggered() {
            self.refresh_due().instrument(gomark_platform::telemetry::poll_span("oauth token refresh")).await;
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
