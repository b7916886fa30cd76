//! Pipelines and stages: paths (both versions), guard flags, bodies, 404 handling.

use hubspot_client::{
    PipelineCreate, PipelineReplace, PipelineStageInput, PipelineStageUpdate, PipelineUpdate, normalize_probability,
    probability, stage_metadata,
};
use serde_json::{Value, json};

use crate::fake_server::{FakeServer, Reply, VERSIONS, call, crm_prefix, hubspot_error, token};

const GUARDS: &str = "validateReferencesBeforeDelete=true&validateDealStageUsagesBeforeDelete=true";

fn stage_json(id: &str, probability: &str, closed: bool) -> Value {
    json!({
        "id": id, "label": format!("Stage {id}"), "displayOrder": 1, "archived": false,
        "metadata": {"probability": probability, "isClosed": closed.to_string()},
        "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    })
}

fn pipeline_json(id: &str) -> Value {
    json!({
        "id": id, "label": "GoMark", "displayOrder": 3, "archived": false,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-02T00:00:00Z",
        "stages": [stage_json("appointmentscheduled", "0.2", false), stage_json("closedwon", "1.0", true)]
    })
}

#[tokio::test]
async fn pipeline_calls_for_both_versions() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server
            .push(Reply::json(200, json!({"results": [pipeline_json("default")]})))
            .push(Reply::json(200, pipeline_json("default")))
            .push(hubspot_error(404, "OBJECT_NOT_FOUND", None, "no pipeline"))
            .push(Reply::json(201, pipeline_json("123")))
            .push(Reply::json(200, pipeline_json("123")))
            .push(Reply::json(200, pipeline_json("123")))
            .push(Reply::empty(204));
        let client = server.client_for(version);
        let t = token();

        let pipelines = client.list_deal_pipelines(&t).await.expect("list");
        let p = &pipelines[0];
        assert_eq!((p.id.as_str(), p.label.as_str(), p.display_order, p.archived), ("default", "GoMark", 3, false));
        assert_eq!(p.updated_at.as_deref(), Some("2026-01-02T00:00:00Z"));
        assert_eq!(p.stages.len(), 2);
        assert_eq!(probability(&p.stages[0]), Some(0.2));
        assert_eq!(p.stages[1].is_closed(), Some(true));
        assert_eq!(p.stages[1].write_permissions.as_deref(), Some("CRM_PERMISSIONS_ENFORCEMENT"));
        assert!(client.get_deal_pipeline(&t, "default").await.expect("get").is_some());
        assert_eq!(client.get_deal_pipeline(&t, "nope").await.expect("404"), None);

        let create = PipelineCreate {
            label: "GoMark".into(),
            display_order: 3,
            stages: vec![
                PipelineStageInput::new("Qualified", 0, 0.2, false),
                PipelineStageInput { stage_id: Some("won".into()), ..PipelineStageInput::new("Won", 1, 1.0, true) },
            ],
            pipeline_id: Some("gomark".into()),
        };
        assert_eq!(client.create_deal_pipeline(&t, &create).await.expect("create").id, "123");
        client
            .update_deal_pipeline(
                &t,
                "123",
                &PipelineUpdate { label: Some("GoMark 2".into()), ..PipelineUpdate::default() },
            )
            .await
            .expect("update");
        let replace = PipelineReplace {
            label: "GoMark".into(),
            display_order: 3,
            stages: vec![PipelineStageInput {
                stage_id: Some("won".into()),
                ..PipelineStageInput::new("Won", 0, 1.0, true)
            }],
        };
        client.replace_deal_pipeline(&t, "123", &replace).await.expect("replace");
        client.delete_deal_pipeline(&t, "123").await.expect("delete");

        let prefix = format!("{}/deals", crm_prefix(version, "pipelines"));
        assert_eq!(
            server.calls(),
            vec![
                call("GET", prefix.clone(), ""),
                call("GET", format!("{prefix}/default"), ""),
                call("GET", format!("{prefix}/nope"), ""),
                call("POST", prefix.clone(), ""),
                call("PATCH", format!("{prefix}/123"), ""),
                call("PUT", format!("{prefix}/123"), GUARDS),
                call("DELETE", format!("{prefix}/123"), GUARDS),
            ]
        );
        let requests = server.requests();
        assert_eq!(
            requests[3].json(),
            json!({
                "label": "GoMark", "displayOrder": 3, "pipelineId": "gomark",
                "stages": [
                    {"label": "Qualified", "displayOrder": 0, "metadata": {"probability": "0.2", "isClosed": "false"}},
                    {"label": "Won", "displayOrder": 1, "metadata": {"probability": "1.0", "isClosed": "true"}, "stageId": "won"}
                ]
            })
        );
        assert_eq!(requests[4].json(), json!({"label": "GoMark 2"}));
        assert_eq!(
            requests[5].json(),
            json!({"label": "GoMark", "displayOrder": 3, "stages": [{"label": "Won", "displayOrder": 0, "metadata": {"probability": "1.0", "isClosed": "true"}, "stageId": "won"}]})
        );
        assert!(requests[6].body.is_empty());
    }
}

#[tokio::test]
async fn stage_calls_for_both_versions() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server
            .push(Reply::json(200, json!({"results": [stage_json("1", "0.1", false)]})))
            .push(Reply::json(200, stage_json("1", "0.1", false)))
            .push(hubspot_error(404, "OBJECT_NOT_FOUND", None, "no stage"))
            .push(Reply::json(201, stage_json("2", "0.5", false)))
            .push(Reply::json(200, stage_json("2", "0.6", false)))
            .push(Reply::json(200, stage_json("2", "0.0", true)))
            .push(Reply::empty(204));
        let client = server.client_for(version);
        let t = token();

        assert_eq!(client.list_deal_pipeline_stages(&t, "123").await.expect("list").len(), 1);
        let stage = client.get_deal_pipeline_stage(&t, "123", "1").await.expect("get").expect("found");
        assert_eq!(stage.probability(), Some(0.1));
        assert_eq!(client.get_deal_pipeline_stage(&t, "123", "9").await.expect("404"), None);
        let created = client
            .create_deal_pipeline_stage(&t, "123", &PipelineStageInput::new("Demo", 2, 0.5, false))
            .await
            .expect("create");
        assert_eq!(created.id, "2");
        let update = PipelineStageUpdate {
            metadata: stage_metadata(0.6, false),
            label: None,
            display_order: Some(4),
            archived: None,
        };
        client.update_deal_pipeline_stage(&t, "123", "2", &update).await.expect("update");
        client
            .replace_deal_pipeline_stage(&t, "123", "2", &PipelineStageInput::new("Lost", 9, 0.0, true))
            .await
            .expect("replace");
        client.delete_deal_pipeline_stage(&t, "123", "2").await.expect("delete");

        let p = format!("{}/deals/123/stages", crm_prefix(version, "pipelines"));
        assert_eq!(
            server.calls(),
            vec![
                call("GET", p.clone(), ""),
                call("GET", format!("{p}/1"), ""),
                call("GET", format!("{p}/9"), ""),
                call("POST", p.clone(), ""),
                call("PATCH", format!("{p}/2"), ""),
                call("PUT", format!("{p}/2"), ""),
                call("DELETE", format!("{p}/2"), "validateReferencesBeforeDelete=true"),
            ]
        );
        let requests = server.requests();
        assert_eq!(
            requests[3].json(),
            json!({"label": "Demo", "displayOrder": 2, "metadata": {"probability": "0.5", "isClosed": "false"}})
        );
        assert_eq!(
            requests[4].json(),
            json!({"metadata": {"probability": "0.6", "isClosed": "false"}, "displayOrder": 4})
        );
        assert_eq!(
            requests[5].json(),
            json!({"label": "Lost", "displayOrder": 9, "metadata": {"probability": "0.0", "isClosed": "true"}})
        );
    }
}

#[test]
fn probability_strings_are_canonical() {
    assert_eq!(normalize_probability(0.1), "0.1");
    assert_eq!(normalize_probability(1.0), "1.0");
    assert_eq!(normalize_probability(0.0), "0.0");
    assert_eq!(normalize_probability(0.449), "0.4");
}
