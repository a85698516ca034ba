//! A Rust function on `lambda_http`, unmodified: routing on the path, query strings, headers,
//! cookies, binary bodies and error statuses, as a function URL delivers them.

use lambda_http::{run, service_fn, Body, Error, Request, RequestExt, Response};

async fn handler(req: Request) -> Result<Response<Body>, Error> {
    let path = req.uri().path().to_string();
    let response = match (req.method().as_str(), path.as_str()) {
        ("GET", p) if p.starts_with("/hello/") => {
            let query = req.query_string_parameters();
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = serde_json::json!({
                "hello": &p["/hello/".len()..],
                "lang": query.first("lang"),
                "agent": header("user-agent"),
                "cookie": header("cookie"),
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("set-cookie", "visited=yes; Path=/")
                .body(Body::Text(body.to_string()))?
        }
        ("POST", "/reverse") => {
            let mut bytes = req.body().to_vec();
            bytes.reverse();
            Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(Body::Binary(bytes))?
        }
        ("GET", "/forbidden") => Response::builder().status(403).body(Body::Text("no".into()))?,
        _ => Response::builder().status(404).body(Body::Text(format!("no route for {path}")))?,
    };
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
