//! Registry API and mirror tests: real ferry servers on 127.0.0.1:0 in this process
//! (`ferry_testkit::inproc`), driven over HTTP.
//! One binary for the crate (modules below) so linking stays cheap.

mod access;
mod admin;
mod blobs;
mod errors;
mod listing;
mod manifests;
mod mirror;

mod parse_memory;
mod tls;
mod uploads;

pub use ferry_testkit::inproc::Registry;

/// The envelope's first error code, asserting the body is an OCI error envelope.
pub async fn error_code(r: reqwest::Response) -> String {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.bytes().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    assert_eq!(ct.as_deref(), Some("application/json"));
    let code = v["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no errors[0].code in {v}"));
    assert!(v["errors"][0]["message"].is_string(), "{v}");
    code.to_owned()
}

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}
