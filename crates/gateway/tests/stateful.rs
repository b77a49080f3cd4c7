//! Everything else under `/v1/` passed through, and stateful ids kept on
//! the key that made them: a response's follow-ups, a file's reads, and a
//! clear error when that key cannot serve.

use gateway::sim::Behavior;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, Setup, SimKey, TempDir};

const A: SimKey = ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy);
const B: SimKey = ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy);

fn key_of(r: &reqwest::Response) -> String {
    r.headers()["x-gateway-key"].to_str().unwrap().to_owned()
}

async fn respond(gw: &Gateway, body: &Value) -> (String, Value) {
    let r = gw.post("/v1/responses", None, body).await;
    assert_eq!(r.status(), 200);
    let key = key_of(&r);
    (key, r.json().await.unwrap())
}

/// Two healthy keys, picked by least use (without pinning, follow-ups
/// would alternate between them); authentication off, so the management
/// API answers this local caller.
async fn two_keys(db: Option<&std::path::Path>) -> Gateway {
    let mut setup = Setup::new(&[A, B]).configure(|c| c.canary.clear());
    if let Some(db) = db {
        setup = setup.db(db);
    }
    setup.start().await
}

#[tokio::test]
async fn follow_ups_of_a_response_reach_the_key_that_made_it() {
    let gw = two_keys(None).await;
    let (first_key, first) = respond(&gw, &json!({"model": "gpt-4o-mini", "input": "hello"})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        let body =
            json!({"model": "gpt-4o-mini", "input": "and then?", "previous_response_id": id});
        let (key, _) = respond(&gw, &body).await;
        assert_eq!(key, first_key, "a follow-up went to another key");
    }
    // The stored response, its input, cancelling and deleting it: all
    // passed through, all on its key.
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::POST, format!("/v1/responses/{id}/cancel")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let r = gw
            .http
            .request(method.clone(), gw.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
        assert_eq!(key_of(&r), first_key, "{method} {path}");
    }
    // Streamed responses are learnt from their first event.
    let body = json!({"model": "gpt-4o-mini", "input": "hi", "stream": true});
    let r = gw.post("/v1/responses", None, &body).await;
    let streamed_key = key_of(&r);
    let text = r.text().await.unwrap();
    let id = text
        .split("\"id\":\"")
        .find_map(|s| s.split('"').next().filter(|id| id.starts_with("resp_")))
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        let body = json!({"model": "gpt-4o-mini", "input": "more", "previous_response_id": id});
        let (key, _) = respond(&gw, &body).await;
        assert_eq!(key, streamed_key);
    }
}

/// A `multipart/form-data` body by hand, as SDKs send a file.
fn multipart(content: &str, closed: bool) -> (String, Vec<u8>) {
    let boundary = "----keypool-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n{content}\r\n"
    );
    if closed {
        body.push_str(&format!("--{boundary}--\r\n"));
    }
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

async fn upload(gw: &Gateway, content: &str, closed: bool) -> reqwest::Response {
    let (kind, body) = multipart(content, closed);
    gw.http
        .post(gw.url("/v1/files"))
        .header("content-type", kind)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(gw: &Gateway, path: &str) -> reqwest::Response {
    gw.http.get(gw.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn a_file_is_uploaded_passed_through_and_read_back_through_its_key() {
    let gw = two_keys(None).await;
    let r = upload(&gw, "the notes", true).await;
    assert_eq!(r.status(), 200);
    for private in [
        "openai-organization",
        "x-ratelimit-remaining-requests",
        "set-cookie",
    ] {
        assert!(
            !r.headers().contains_key(private),
            "{private}: the upstream account's headers stay with the gateway"
        );
    }
    let key = key_of(&r);
    let file: Value = r.json().await.unwrap();
    let id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(file["bytes"], 9);
    for _ in 0..3 {
        let r = get(&gw, &format!("/v1/files/{id}/content")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(key_of(&r), key);
        assert_eq!(r.text().await.unwrap(), "the notes");
    }
    // A response that reads the file goes to its key too.
    let body = json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_id": id}, {"type": "input_text", "text": "summarise"}]}]});
    for _ in 0..3 {
        assert_eq!(respond(&gw, &body).await.0, key);
    }
}

#[tokio::test]
async fn the_upstreams_own_errors_come_back_as_they_are_and_no_key_pays() {
    let gw = two_keys(None).await;
    let r = get(&gw, "/v1/files/file-nobody-made-this").await;
    assert_eq!(r.status(), 404, "the upstream's answer");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let r = upload(&gw, "cut short", false).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_multipart");
    // A path the upstream does not serve is its own 404, not the gateway's.
    let r = gw
        .post("/v1/moderations", None, &json!({"input": "x"}))
        .await;
    assert_eq!(r.status(), 404);
    assert!(
        r.headers().contains_key("x-gateway-key"),
        "it reached the upstream"
    );
    let (_, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    let states: Vec<&str> = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["active", "active"],
        "the caller's faults cost no key"
    );
}

#[tokio::test]
async fn when_the_key_that_made_an_id_cannot_serve_the_answer_says_so() {
    let gw = two_keys(None).await;
    let (key, first) = respond(&gw, &json!({"model": "gpt-4o-mini", "input": "hello"})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let key_id = gw.key_id(&key).await;
    let (status, _) = gw
        .admin(
            Method::POST,
            &format!("/admin/upstream-keys/{key_id}/disable"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let body = json!({"model": "gpt-4o-mini", "input": "and then?", "previous_response_id": id});
    let r = gw.post("/v1/responses", None, &body).await;
    assert_eq!(r.status(), 503);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "pinned_key_unavailable", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(&id) && message.contains(&key), "{message}");
}

#[tokio::test]
async fn ids_keep_their_keys_across_a_restart() {
    let dir = TempDir::new("pins-restart");
    let db = dir.join("state.db");
    let mut gw = two_keys(Some(&db)).await;
    let (key, first) = respond(&gw, &json!({"model": "gpt-4o-mini", "input": "hello"})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    gw.stop().await;
    gw.resume().await.unwrap();
    for _ in 0..3 {
        let body = json!({"model": "gpt-4o-mini", "input": "again", "previous_response_id": id});
        assert_eq!(respond(&gw, &body).await.0, key);
    }
}
