//! OAuth grants are refreshed before they expire, through HubSpot's token endpoint, and
//! stored sealed; grants far from expiry and private-app tokens are left alone.

use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::oauth::OAuthRefresher;
use gomark_hubspot_sync::{MIGRATIONS, Portals};
use gomark_storage::Database;
use hubspot_client::{ClientConfig, HubSpotClient};
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn grants_close_to_expiry_are_refreshed_and_stored() {
    let forms: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = forms.clone();
    let app = axum::Router::new().route(
        "/oauth/2026-03/token",
        axum::routing::post(move |body: String| {
            seen.lock().expect("lock").push(body);
            std::future::ready(axum::Json(serde_json::json!({
                "access_token": "new-access-token",
                "refresh_token": "next-refresh-token",
                "expires_in": 1800,
                "token_type": "bearer"
            })))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    let now = gomark_storage::now_ms();
    let soon = Credential::OAuth {
        access_token: "old-access".into(),
        refresh_token: "refresh-1".into(),
        expires_at_ms: now + 60_000,
    };
    let later = Credential::OAuth {
        access_token: "fine".into(),
        refresh_token: "refresh-2".into(),
        expires_at_ms: now + 3_600_000,
    };
    portals.register("c1", "101", &soon).await.expect("register");
    portals.register("c2", "102", &later).await.expect("register");
    portals.register("c3", "103", &Credential::PrivateApp { token: "pat".into() }).await.expect("register");

    let client = HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
        .expect("client");
    let refresher = OAuthRefresher {
        portals: portals.clone(),
        client,
        client_id: "app-id".into(),
        client_secret: "app-secret".into(),
    };
    assert_eq!(refresher.refresh_due().await, 1, "only the grant close to expiry");

    let form = forms.lock().expect("lock").clone();
    assert_eq!(form.len(), 1);
    assert!(form[0].contains("grant_type=refresh_token") && form[0].contains("refresh_token=refresh-1"), "{}", form[0]);
    match portals.get("c1").await.expect("get").expect("portal").credential {
        Credential::OAuth { access_token, refresh_token, expires_at_ms } => {
            assert_eq!((access_token.as_str(), refresh_token.as_str()), ("new-access-token", "next-refresh-token"));
            assert!(expires_at_ms > now + 1_700_000, "the new expiry is stored");
        }
        other => panic!("still OAuth: {other:?}"),
    }
    assert_eq!(refresher.refresh_due().await, 0, "refreshed grants are not due again");
}
