//! SQS's older query protocol, which SDKs released before the JSON protocol (late 2023) speak:
//! `POST /` with a form body `Action=SendMessage&QueueUrl=...`, answered
//! in XML. Each request is turned into the JSON protocol's input and runs through the same
//! [`super::sqs::call`], so both protocols check and do exactly the same; only the encoding
//! differs.
//!
//! Form names follow the query protocol's flattening: `Attribute.N.Name`/`.Value`,
//! `AttributeName.N`, `MessageAttribute.N.Name`/`.Value.DataType`/`.Value.StringValue`/
//! `.Value.BinaryValue`, `MessageAttributeName.N`, `MessageSystemAttributeName.N`, and batch
//! entries `SendMessageBatchRequestEntry.N.<field>` (and the delete and visibility ones).

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::sqs::SqsError;
use crate::access::Access;
use crate::AppState;

/// Whether a request to the SQS endpoint speaks the query protocol (a form, no target).
pub(crate) fn is_query(headers: &HeaderMap) -> bool {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    form && !headers.contains_key("x-amz-target")
}

/// Runs a query-protocol request (its form body) posted to `/`, as botocore sends it.
pub(crate) async fn handle(
    state: &AppState, access: Option<&Access>, headers: &HeaderMap, form: &[u8],
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(form).into_owned().collect();
    let Some(action) = pairs.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone()) else {
        return error(SqsError::missing("Action"), &request_id);
    };
    let input = input_of(&pairs);
    match super::sqs::call(state, access, headers, &action, Value::Object(input)).await {
        Ok(output) => {
            let mut xml = format!("<{action}Response xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">");
            if output.as_object().is_some_and(|o| !o.is_empty()) {
                xml.push_str(&format!("<{action}Result>"));
                write_fields(&mut xml, &action, &output);
                xml.push_str(&format!("</{action}Result>"));
            }
            xml.push_str(&format!(
                "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
            ));
            xml_response(StatusCode::OK, xml)
        }
        Err(e) => error(e, &request_id),
    }
}

fn xml_response(status: StatusCode, xml: String) -> Response {
    let mut resp = (status, xml).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

fn error(e: SqsError, request_id: &str) -> Response {
    let (status, code, message) = e.parts();
    let fault = if status.is_server_error() { "Receiver" } else { "Sender" };
    let xml = format!(
        "<ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        esc(code),
        esc(message)
    );
    xml_response(status, xml)
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Carriage returns survive XML parsing only as a reference.
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

/// The pairs under `prefix.N.`, by N: `N -> [(rest, value)]`.
fn indexed<'a>(pairs: &'a [(String, String)], prefix: &str) -> BTreeMap<u32, Vec<(&'a str, &'a str)>> {
    let mut out: BTreeMap<u32, Vec<(&str, &str)>> = BTreeMap::new();
    for (k, v) in pairs {
        let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else { continue };
        let (n, rest) = rest.split_once('.').unwrap_or((rest, ""));
        if let Ok(n) = n.parse::<u32>() {
            out.entry(n).or_default().push((rest, v.as_str()));
        }
    }
    out
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The JSON protocol's input of a query request's pairs: its fields, and its batch entries'
/// (one level deep, as SQS's are: an entry's own fields never hold entries, so a key nesting
/// entries is not followed, and a hostile form cannot recurse).
fn input_of(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut input = fields_of(pairs);
    for prefix in [
        "SendMessageBatchRequestEntry",
        "DeleteMessageBatchRequestEntry",
        "ChangeMessageVisibilityBatchRequestEntry",
    ] {
        let entries: Vec<Value> =
            indexed(pairs, prefix).values().map(|fields| Value::Object(fields_of(&owned(fields)))).collect();
        if !entries.is_empty() {
            input.insert("Entries".into(), Value::Array(entries));
        }
    }
    input
}

/// The fields of a query request or of one batch entry: plain ones, attributes and names.
fn fields_of(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut input = Map::new();
    let structured = [
        "Attribute.",
        "AttributeName.",
        "MessageAttribute.",
        "MessageAttributeName.",
        "MessageSystemAttributeName.",
        "SendMessageBatchRequestEntry.",
        "DeleteMessageBatchRequestEntry.",
        "ChangeMessageVisibilityBatchRequestEntry.",
    ];
    for (k, v) in pairs {
        if k != "Action" && k != "Version" && !structured.iter().any(|p| k.starts_with(p)) && !k.contains('.')
        {
            input.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let attributes: Map<String, Value> = indexed(pairs, "Attribute")
        .values()
        .filter_map(|fields| {
            let get = |f: &str| fields.iter().find(|(k, _)| *k == f).map(|(_, v)| *v);
            Some((get("Name")?.to_string(), Value::String(get("Value").unwrap_or_default().to_string())))
        })
        .collect();
    if !attributes.is_empty() {
        input.insert("Attributes".into(), Value::Object(attributes));
    }
    for (prefix, key) in [
        ("AttributeName", "AttributeNames"),
        ("MessageAttributeName", "MessageAttributeNames"),
        ("MessageSystemAttributeName", "MessageSystemAttributeNames"),
    ] {
        let names: Vec<Value> = indexed(pairs, prefix)
            .values()
            .filter_map(|fields| fields.iter().find(|(k, _)| k.is_empty()).map(|(_, v)| json!(v)))
            .collect();
        if !names.is_empty() {
            input.insert(key.into(), Value::Array(names));
        }
    }
    let message_attributes: Map<String, Value> = indexed(pairs, "MessageAttribute")
        .values()
        .filter_map(|fields| {
            let get =
                |f: &str| fields.iter().find(|(k, _)| *k == f).map(|(_, v)| Value::String(v.to_string()));
            let name = get("Name")?.as_str()?.to_string();
            let mut value = Map::new();
            for (field, key) in [
                ("Value.DataType", "DataType"),
                ("Value.StringValue", "StringValue"),
                ("Value.BinaryValue", "BinaryValue"),
            ] {
                if let Some(v) = get(field) {
                    value.insert(key.into(), v);
                }
            }
            Some((name, Value::Object(value)))
        })
        .collect();
    if !message_attributes.is_empty() {
        input.insert("MessageAttributes".into(), Value::Object(message_attributes));
    }
    input
}

/// The JSON protocol's output as the query protocol's XML elements.
fn write_fields(xml: &mut String, action: &str, v: &Value) {
    let Some(fields) = v.as_object() else { return };
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("Attributes", Value::Object(map)) => {
                for (name, value) in map {
                    let value = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
                    xml.push_str(&format!(
                        "<Attribute><Name>{}</Name><Value>{}</Value></Attribute>",
                        esc(name),
                        esc(&value)
                    ));
                }
            }
            ("MessageAttributes", Value::Object(map)) => {
                for (name, value) in map {
                    xml.push_str(&format!("<MessageAttribute><Name>{}</Name><Value>", esc(name)));
                    write_fields(xml, action, value);
                    xml.push_str("</Value></MessageAttribute>");
                }
            }
            (_, Value::Array(items)) => {
                let element = match key.as_str() {
                    "QueueUrls" => "QueueUrl".to_string(),
                    "Messages" => "Message".to_string(),
                    "Successful" => format!("{action}ResultEntry"),
                    "Failed" => "BatchResultErrorEntry".to_string(),
                    other => other.trim_end_matches('s').to_string(),
                };
                for item in items {
                    match item {
                        Value::Object(_) => {
                            xml.push_str(&format!("<{element}>"));
                            write_fields(xml, action, item);
                            xml.push_str(&format!("</{element}>"));
                        }
                        other => {
                            let text =
                                other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string());
                            xml.push_str(&format!("<{element}>{}</{element}>", esc(&text)));
                        }
                    }
                }
            }
            (_, Value::Object(_)) => {
                xml.push_str(&format!("<{key}>"));
                write_fields(xml, action, value);
                xml.push_str(&format!("</{key}>"));
            }
            (_, Value::Null) => {}
            (_, other) => {
                let text = other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string());
                xml.push_str(&format!("<{key}>{}</{key}>", esc(&text)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(form: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(form.as_bytes()).into_owned().collect()
    }

    #[test]
    fn query_forms_become_the_json_protocols_input() {
        let input = input_of(&pairs(
            "Action=SendMessageBatch&QueueUrl=http%3A%2F%2Fh%2F000000000000%2Fq\
             &SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=one\
             &SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k\
             &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String\
             &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v\
             &SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=two&SendMessageBatchRequestEntry.2.DelaySeconds=5",
        ));
        assert_eq!(
            Value::Object(input),
            json!({
                "QueueUrl": "http://h/000000000000/q",
                "Entries": [
                    { "Id": "a", "MessageBody": "one", "MessageAttributes": { "k": { "DataType": "String", "StringValue": "v" } } },
                    { "Id": "b", "MessageBody": "two", "DelaySeconds": "5" },
                ],
            })
        );
        let input = input_of(&pairs(
            "Action=CreateQueue&QueueName=q&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=40&AttributeName.1=All&AttributeName.2=QueueArn",
        ));
        assert_eq!(
            Value::Object(input),
            json!({ "QueueName": "q", "Attributes": { "VisibilityTimeout": "40" }, "AttributeNames": ["All", "QueueArn"] })
        );
    }

    #[test]
    fn json_outputs_become_the_query_protocols_xml() {
        let mut xml = String::new();
        let out = json!({
            "Messages": [{
                "MessageId": "m", "Body": "a<b & c", "Attributes": { "SentTimestamp": "1" },
                "MessageAttributes": { "k": { "DataType": "String", "StringValue": "v" } },
            }],
        });
        write_fields(&mut xml, "ReceiveMessage", &out);
        for part in [
            "<Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute>",
            "<Body>a&lt;b &amp; c</Body>",
            "<MessageAttribute><Name>k</Name><Value>",
            "<DataType>String</DataType>",
            "<StringValue>v</StringValue>",
            "<MessageId>m</MessageId>",
        ] {
            assert!(xml.starts_with("<Message>") && xml.contains(part), "{part} in {xml}");
        }
        let mut xml = String::new();
        write_fields(&mut xml, "DeleteMessageBatch", &json!({ "Successful": [{ "Id": "1" }], "Failed": [] }));
        assert_eq!(xml, "<DeleteMessageBatchResultEntry><Id>1</Id></DeleteMessageBatchResultEntry>");
    }
}
