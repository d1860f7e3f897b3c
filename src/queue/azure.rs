//! The legacy Azure-queue work-claiming protocol (scriptworker ≤ 3.x, Taskcluster before
//! v24): the pure half.
//!
//! Why it exists: some deployments still run a queue of that era, where a worker finds work by
//! polling Azure Storage queues whose signed (SAS) URLs `pollTaskUrls` hands out, instead of
//! calling `claimWork`. Everything here is IO-free so it can be unit tested and fuzzed: the
//! worker's loop (`worker::azure_poll`) does the HTTP and calls these functions on the bytes.
//!
//! What comes from outside is untrusted: the `QueueMessagesList` XML and each message's
//! base64 JSON can be anything. The XML is read with quick-xml by element name (any order,
//! unknown elements ignored, the five predefined entities and character references decoded).
//! A document type declaration is refused outright, so no entity can be defined, let alone
//! expanded. Sizes and counts are capped by [`Limits`]. A message's JSON tolerates unknown
//! fields (`hintId` crashed scriptworker 0.8.0) but its `taskId` must be a slugid and its
//! `runId` a non-negative integer.
//!
//! The SAS query strings of the poll and delete URLs are credentials: they stay in
//! [`Secret`]s, and no error of this module contains one.

use crate::ids::{InvalidTaskId, TaskId};
use crate::secret::Secret;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use quick_xml::events::Event;

/// The reference worker refreshed its poll URLs when less than this remained before
/// `expires`.
pub const REFRESH_MARGIN_SECS: i64 = 300;

/// Caps on what a poll answer may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest XML body read from a poll URL. Default 256 KiB: one message (we ask for one)
    /// is at most 64 KiB of base64 text plus a few hundred bytes of envelope.
    pub max_body_bytes: usize,
    /// Most `QueueMessage` elements accepted in one answer. Default 32 (Azure's maximum).
    pub max_messages: usize,
    /// Deepest element nesting accepted. Default 16 (Azure sends 3).
    pub max_depth: usize,
    /// Largest value of one element (`MessageText` included). Default 96 KiB.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 256 * 1024,
            max_messages: 32,
            max_depth: 16,
            max_field_bytes: 96 * 1024,
        }
    }
}

/// Why a poll answer as a whole is unusable (no message in it can be deleted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body exceeds [`Limits::max_body_bytes`].
    #[error("poll answer of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not well-formed XML (quick-xml's message, which quotes no content).
    #[error("poll answer is not well-formed XML at byte {position}: {reason}")]
    Malformed {
        /// Byte offset reached.
        position: u64,
        /// Parser message.
        reason: String,
    },
    /// A `<!DOCTYPE>`: Azure never sends one, and refusing it rules out entity definitions.
    #[error("poll answer has a document type declaration (refused)")]
    DocType,
    /// An entity other than the five predefined ones (or an invalid character reference).
    #[error("poll answer uses an undefined entity or invalid character reference")]
    Entity,
    /// The root element is not `QueueMessagesList`.
    #[error("poll answer's root element is not QueueMessagesList")]
    WrongRoot,
    /// More than [`Limits::max_messages`] messages.
    #[error("poll answer has more than {limit} messages")]
    TooManyMessages {
        /// The limit.
        limit: usize,
    },
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("poll answer nests deeper than {limit} elements")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// One element's value exceeds [`Limits::max_field_bytes`].
    #[error("an element of the poll answer exceeds {limit} bytes")]
    FieldTooLarge {
        /// The limit.
        limit: usize,
    },
}

/// One `QueueMessage`, as found. Fields are `None` when absent; `duplicate` names a field that
/// occurred twice (the message is then malformed: two readers could pick different copies).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RawMessage {
    /// `MessageId`.
    pub message_id: Option<String>,
    /// `PopReceipt` (needed, with the id, to delete the message).
    pub pop_receipt: Option<String>,
    /// `MessageText`: base64 of the JSON message.
    pub message_text: Option<String>,
    /// `DequeueCount`, when present and a number.
    pub dequeue_count: Option<u64>,
    /// A field that occurred more than once.
    pub duplicate: Option<&'static str>,
}

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMessage")
            .field("message_id", &self.message_id)
            .field("dequeue_count", &self.dequeue_count)
            .field(
                "message_text_len",
                &self.message_text.as_ref().map(String::len),
            )
            .field("duplicate", &self.duplicate)
            .finish_non_exhaustive()
    }
}

impl RawMessage {
    /// `(messageId, popReceipt)` when both are present: what deleting the message needs.
    pub fn delete_handle(&self) -> Option<(&str, &str)> {
        match (&self.message_id, &self.pop_receipt) {
            (Some(id), Some(pop)) if !id.is_empty() && !pop.is_empty() => {
                Some((id.as_str(), pop.as_str()))
            }
            _ => None,
        }
    }
}

/// What a well-formed message asks for: claim this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// The task.
    pub task_id: TaskId,
    /// The run to claim.
    pub run_id: u32,
}

/// Why one message is unusable (it is deleted, nothing is claimed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A field occurred twice in the `QueueMessage`.
    #[error("message has two {0} elements")]
    Duplicate(&'static str),
    /// No `MessageText`.
    #[error("message has no MessageText")]
    NoText,
    /// `MessageText` is not base64.
    #[error("MessageText is not base64")]
    Base64,
    /// The decoded text is not JSON (or has duplicate keys).
    #[error("MessageText is not JSON: {0}")]
    Json(String),
    /// The JSON is not an object.
    #[error("message JSON is not an object")]
    NotAnObject,
    /// No string `taskId`.
    #[error("message has no string taskId")]
    NoTaskId,
    /// `taskId` is not a slugid.
    #[error(transparent)]
    TaskId(#[from] InvalidTaskId),
    /// `runId` is missing, not an integer, negative or too large.
    #[error("message runId is not a non-negative integer: {0}")]
    RunId(String),
}

/// Parses a `QueueMessagesList` answer. An empty list (or a list with no messages) is fine.
pub fn parse_messages(xml: &[u8], limits: &Limits) -> Result<Vec<RawMessage>, XmlError> {
    if xml.len() > limits.max_body_bytes {
        return Err(XmlError::TooLarge {
            len: xml.len(),
            limit: limits.max_body_bytes,
        });
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    // Mismatched end tags are an error (the default, stated here because it matters).
    reader.config_mut().check_end_names = true;
    let malformed = |reader: &quick_xml::Reader<&[u8]>, e: quick_xml::Error| XmlError::Malformed {
        position: reader.buffer_position(),
        reason: e.to_string().chars().take(200).collect(),
    };
    let mut buf = Vec::new();
    // Local names of the open elements.
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut seen_root = false;
    let mut messages = Vec::new();
    let mut current: Option<RawMessage> = None;
    // Text of the field element being read (depth 3: list / message / field).
    let mut field: Option<String> = None;
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(&reader, e))?;
        match event {
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = start.local_name().as_ref().to_vec();
                open(
                    &name,
                    &mut stack,
                    &mut seen_root,
                    &mut current,
                    &mut field,
                    limits,
                )?;
                stack.push(name);
                // `<X/>` opens and closes at once.
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut current, &mut field, &mut messages, limits)?;
                }
            }
            Event::End(_) => close(&mut stack, &mut current, &mut field, &mut messages, limits)?,
            Event::Text(text) => {
                if stack.len() == 3
                    && let Some(f) = field.as_mut()
                {
                    let s = text.xml10_content().map_err(|e| XmlError::Malformed {
                        position: reader.buffer_position(),
                        reason: e.to_string(),
                    })?;
                    push_capped(f, &s, limits)?;
                } else if stack.is_empty() && !text.iter().all(u8::is_ascii_whitespace) {
                    return Err(XmlError::Malformed {
                        position: reader.buffer_position(),
                        reason: "text outside the root element".into(),
                    });
                }
            }
            Event::CData(data) => {
                if stack.len() == 3
                    && let Some(f) = field.as_mut()
                {
                    let s = std::str::from_utf8(&data).map_err(|_| XmlError::Malformed {
                        position: reader.buffer_position(),
                        reason: "CDATA is not UTF-8".into(),
                    })?;
                    push_capped(f, s, limits)?;
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(XmlError::Entity),
                    }
                } else {
                    let name = std::str::from_utf8(&r).map_err(|_| XmlError::Entity)?;
                    quick_xml::escape::resolve_predefined_entity(name)
                        .ok_or(XmlError::Entity)?
                        .to_owned()
                };
                if stack.len() == 3
                    && let Some(f) = field.as_mut()
                {
                    push_capped(f, &resolved, limits)?;
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed {
            position: reader.buffer_position(),
            reason: "unclosed element at end of input".into(),
        });
    }
    if !seen_root {
        return Err(XmlError::WrongRoot);
    }
    Ok(messages)
}

fn push_capped(field: &mut String, s: &str, limits: &Limits) -> Result<(), XmlError> {
    if field.len().saturating_add(s.len()) > limits.max_field_bytes {
        return Err(XmlError::FieldTooLarge {
            limit: limits.max_field_bytes,
        });
    }
    field.push_str(s);
    Ok(())
}

fn open(
    name: &[u8],
    stack: &mut [Vec<u8>],
    seen_root: &mut bool,
    current: &mut Option<RawMessage>,
    field: &mut Option<String>,
    limits: &Limits,
) -> Result<(), XmlError> {
    if stack.len() >= limits.max_depth {
        return Err(XmlError::TooDeep {
            limit: limits.max_depth,
        });
    }
    match stack.len() {
        0 => {
            if *seen_root {
                return Err(XmlError::Malformed {
                    position: 0,
                    reason: "two root elements".into(),
                });
            }
            if name != b"QueueMessagesList" {
                return Err(XmlError::WrongRoot);
            }
            *seen_root = true;
        }
        1 if name == b"QueueMessage" => *current = Some(RawMessage::default()),
        2 if current.is_some() => *field = Some(String::new()),
        _ => {}
    }
    Ok(())
}

fn close(
    stack: &mut Vec<Vec<u8>>,
    current: &mut Option<RawMessage>,
    field: &mut Option<String>,
    messages: &mut Vec<RawMessage>,
    limits: &Limits,
) -> Result<(), XmlError> {
    let depth = stack.len();
    let Some(name) = stack.pop() else {
        return Ok(());
    };
    match depth {
        2 => {
            if let Some(m) = current.take() {
                if messages.len() >= limits.max_messages {
                    return Err(XmlError::TooManyMessages {
                        limit: limits.max_messages,
                    });
                }
                messages.push(m);
            }
        }
        3 => {
            if let (Some(m), Some(text)) = (current.as_mut(), field.take()) {
                let value = text
                    .trim_matches(|c: char| c.is_ascii_whitespace())
                    .to_owned();
                let (slot, label) = match name.as_slice() {
                    b"MessageId" => (&mut m.message_id, "MessageId"),
                    b"PopReceipt" => (&mut m.pop_receipt, "PopReceipt"),
                    b"MessageText" => (&mut m.message_text, "MessageText"),
                    b"DequeueCount" => {
                        m.dequeue_count = value.parse().ok();
                        return Ok(());
                    }
                    _ => return Ok(()),
                };
                if slot.is_some() {
                    m.duplicate.get_or_insert(label);
                }
                *slot = Some(value);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Decodes one message's `MessageText` into the run it asks us to claim.
pub fn decode_message(message: &RawMessage) -> Result<TaskRef, MessageError> {
    if let Some(field) = message.duplicate {
        return Err(MessageError::Duplicate(field));
    }
    let text = message
        .message_text
        .as_deref()
        .ok_or(MessageError::NoText)?;
    decode_message_text(text)
}

/// Decodes base64 `text` (surrounding whitespace ignored) into `{taskId, runId, ...}`; other
/// fields (`hintId`, anything newer) are ignored, duplicate keys refused.
pub fn decode_message_text(text: &str) -> Result<TaskRef, MessageError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim_matches(|c: char| c.is_ascii_whitespace()))
        .map_err(|_| MessageError::Base64)?;
    let value = crate::strict_json::from_slice(&bytes).map_err(|e| {
        // serde_json's messages name a position and a category, never the input.
        MessageError::Json(e.to_string().chars().take(200).collect())
    })?;
    let obj = value.as_object().ok_or(MessageError::NotAnObject)?;
    let task_id = obj
        .get("taskId")
        .and_then(|v| v.as_str())
        .ok_or(MessageError::NoTaskId)?;
    let task_id = TaskId::parse(task_id)?;
    let run_id = match obj.get("runId") {
        None => return Err(MessageError::RunId("missing".into())),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                MessageError::RunId(crate::untrusted_text::escape_line(
                    &v.to_string().chars().take(40).collect::<String>(),
                ))
            })?,
    };
    Ok(TaskRef { task_id, run_id })
}

/// True when the poll URLs must be fetched again: less than [`REFRESH_MARGIN_SECS`] before
/// `expires` (or already past it).
pub fn needs_refresh(expires: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    expires.signed_duration_since(now) < chrono::Duration::seconds(REFRESH_MARGIN_SECS)
}

/// Why a signed URL from `pollTaskUrls` is refused. Never contains the URL's query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedUrlError {
    /// Not an absolute URL.
    #[error("signed URL is not a URL")]
    NotAUrl,
    /// Neither https nor plain http to a loopback host (the SAS would travel in clear text).
    #[error("signed URL {shown} must be https (plain http only to a loopback host)")]
    Insecure {
        /// The URL without its query.
        shown: String,
    },
    /// A delete URL without the `{{messageId}}` or `{{popReceipt}}` placeholder.
    #[error("signed delete URL lacks the {0} placeholder")]
    Placeholder(&'static str),
}

/// Parses a signed URL and checks its scheme: https, or http to a loopback host.
pub fn check_signed_url(url: &Secret) -> Result<url::Url, SignedUrlError> {
    let parsed = url::Url::parse(url.expose()).map_err(|_| SignedUrlError::NotAUrl)?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(SignedUrlError::Insecure {
            shown: parsed[..url::Position::AfterPath].to_owned(),
        }),
    }
}

/// The delete URL of one message: `template` with `{{messageId}}` and `{{popReceipt}}`
/// replaced by the URL-encoded values (a pop receipt usually ends in `=`, sent as `%3D`).
pub fn delete_url(
    template: &Secret,
    message_id: &str,
    pop_receipt: &str,
) -> Result<Secret, SignedUrlError> {
    const ID: &str = "{{messageId}}";
    const POP: &str = "{{popReceipt}}";
    let t = template.expose();
    if !t.contains(ID) {
        return Err(SignedUrlError::Placeholder(ID));
    }
    if !t.contains(POP) {
        return Err(SignedUrlError::Placeholder(POP));
    }
    let id = super::encode_component(message_id);
    let pop = super::encode_component(pop_receipt);
    Ok(Secret::new(t.replace(ID, &id).replace(POP, &pop)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/data/seeds/azure/azure.xml");

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn one(text: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage>\
             <MessageId>m</MessageId><PopReceipt>p</PopReceipt><MessageText>{text}</MessageText>\
             </QueueMessage></QueueMessagesList>"
        )
    }

    #[test]
    fn the_reference_fixture_parses_exactly() {
        let msgs = parse_messages(FIXTURE.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0],
            RawMessage {
                message_id: Some("fdfc7989-b048-4ea8-bd33-69f63b83ba54".into()),
                pop_receipt: Some("AgAAAAMAAAAAAAAAMApAvp2X0QE=".into()),
                message_text: Some(
                    "eyJ0YXNrSWQiOiJHVmkydlR3OFJZcWRnYTZwRTA4QWl3IiwicnVuSWQiOjB9".into()
                ),
                dequeue_count: Some(1),
                duplicate: None,
            }
        );
        assert_eq!(
            msgs[1],
            RawMessage {
                message_id: Some("two_id".into()),
                pop_receipt: Some("two_pop=".into()),
                message_text: Some("eyJydW5JZCI6IDAsICJ0YXNrSWQiOiAiYXNkZiJ9Cg==".into()),
                dequeue_count: None,
                duplicate: None,
            }
        );
        assert_eq!(
            decode_message(&msgs[0]).unwrap(),
            TaskRef {
                task_id: TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap(),
                run_id: 0
            }
        );
        // The second message's taskId is "asdf": not a slugid, so it is refused.
        assert!(matches!(
            decode_message(&msgs[1]),
            Err(MessageError::TaskId(_))
        ));
        assert_eq!(msgs[1].delete_handle(), Some(("two_id", "two_pop=")));
    }

    #[test]
    fn empty_lists_any_order_unknown_elements_and_entities() {
        let l = Limits::default();
        assert!(
            parse_messages(b"<QueueMessagesList/>", &l)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_messages(
                b"<?xml version=\"1.0\"?>\n<QueueMessagesList>\n</QueueMessagesList>\n",
                &l
            )
            .unwrap()
            .is_empty()
        );
        let text =
            b64(r#"{"runId":2,"hintId":"h","new":{"x":[1]},"taskId":"GVi2vTw8RYqdga6pE08Aiw"}"#);
        let xml = format!(
            "<QueueMessagesList><Extra><QueueMessage>ignored</QueueMessage></Extra><QueueMessage>\
             <MessageText><![CDATA[{text}]]></MessageText><Unknown a=\"1\"><x/></Unknown>\
             <PopReceipt>a&amp;b&#x3D;&#61;&lt;&gt;&quot;&apos;</PopReceipt><!-- c -->\
             <MessageId>id</MessageId></QueueMessage></QueueMessagesList>"
        );
        let msgs = parse_messages(xml.as_bytes(), &l).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].pop_receipt.as_deref(), Some("a&b==<>\"'"));
        assert_eq!(decode_message(&msgs[0]).unwrap().run_id, 2);
    }

    #[test]
    fn bombs_and_oversized_documents_are_refused() {
        let l = Limits::default();
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
                    <!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><QueueMessagesList><QueueMessage>\
                    <MessageText>&lol2;</MessageText></QueueMessage></QueueMessagesList>";
        assert_eq!(parse_messages(bomb.as_bytes(), &l), Err(XmlError::DocType));
        let undefined = one("&lol;");
        assert_eq!(
            parse_messages(undefined.as_bytes(), &l),
            Err(XmlError::Entity)
        );
        let external = "<!DOCTYPE x SYSTEM \"file:///etc/passwd\"><QueueMessagesList/>";
        assert_eq!(
            parse_messages(external.as_bytes(), &l),
            Err(XmlError::DocType)
        );
        assert_eq!(
            parse_messages(one("&#0;").as_bytes(), &l),
            Err(XmlError::Entity)
        );
        let huge = one(&"A".repeat(300 * 1024));
        assert!(matches!(
            parse_messages(huge.as_bytes(), &l),
            Err(XmlError::TooLarge { .. })
        ));
        let big_field = one(&"A".repeat(100 * 1024));
        assert!(matches!(
            parse_messages(big_field.as_bytes(), &l),
            Err(XmlError::FieldTooLarge { .. })
        ));
        let deep = format!("<QueueMessagesList>{}", "<a>".repeat(100));
        assert!(matches!(
            parse_messages(deep.as_bytes(), &l),
            Err(XmlError::TooDeep { .. })
        ));
        let many = format!(
            "<QueueMessagesList>{}</QueueMessagesList>",
            "<QueueMessage/>".repeat(33)
        );
        assert!(matches!(
            parse_messages(many.as_bytes(), &l),
            Err(XmlError::TooManyMessages { limit: 32 })
        ));
        for bad in [
            "",
            "not xml",
            "<QueueMessagesList>",
            "<QueueMessagesList></Other>",
            "<Error><Code>AuthenticationFailed</Code></Error>",
            "<QueueMessagesList/><QueueMessagesList/>",
            "<QueueMessagesList/>trailing",
        ] {
            assert!(parse_messages(bad.as_bytes(), &l).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_messages_are_each_refused() {
        let id = "GVi2vTw8RYqdga6pE08Aiw";
        type Check = fn(&MessageError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("!!!not base64!!!".into(), |e| *e == MessageError::Base64),
            (b64("not json"), |e| matches!(e, MessageError::Json(_))),
            (b64("[1,2]"), |e| *e == MessageError::NotAnObject),
            (b64(r#"{"runId":0}"#), |e| *e == MessageError::NoTaskId),
            (b64(r#"{"taskId":"asdf","runId":0}"#), |e| {
                matches!(e, MessageError::TaskId(_))
            }),
            (b64(&format!(r#"{{"taskId":"{id}"}}"#)), |e| {
                matches!(e, MessageError::RunId(_))
            }),
            (b64(&format!(r#"{{"taskId":"{id}","runId":-1}}"#)), |e| {
                matches!(e, MessageError::RunId(_))
            }),
            (b64(&format!(r#"{{"taskId":"{id}","runId":1.5}}"#)), |e| {
                matches!(e, MessageError::RunId(_))
            }),
            (b64(&format!(r#"{{"taskId":"{id}","runId":"0"}}"#)), |e| {
                matches!(e, MessageError::RunId(_))
            }),
            (
                b64(&format!(r#"{{"taskId":"{id}","runId":4294967296}}"#)),
                |e| matches!(e, MessageError::RunId(_)),
            ),
            (
                b64(&format!(r#"{{"taskId":"{id}","runId":0,"taskId":"{id}"}}"#)),
                |e| matches!(e, MessageError::Json(_)),
            ),
        ];
        for (text, check) in cases {
            let err = decode_message_text(&text).unwrap_err();
            assert!(check(&err), "{text}: {err:?}");
        }
        let dup = RawMessage {
            message_text: Some(b64(&format!(r#"{{"taskId":"{id}","runId":0}}"#))),
            duplicate: Some("MessageText"),
            ..RawMessage::default()
        };
        assert_eq!(
            decode_message(&dup),
            Err(MessageError::Duplicate("MessageText"))
        );
        assert_eq!(
            decode_message(&RawMessage::default()),
            Err(MessageError::NoText)
        );
        let xml = "<QueueMessagesList><QueueMessage><MessageText>a</MessageText>\
                   <MessageText>b</MessageText></QueueMessage></QueueMessagesList>";
        let msgs = parse_messages(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(msgs[0].duplicate, Some("MessageText"));
        assert_eq!(msgs[0].delete_handle(), None);
    }

    #[test]
    fn refresh_margin_delete_url_and_schemes() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(!needs_refresh(now + chrono::Duration::seconds(301), now));
        assert!(needs_refresh(now + chrono::Duration::seconds(299), now));
        assert!(needs_refresh(now - chrono::Duration::seconds(1), now));
        let t = Secret::new(
            "https://a.queue.core.windows.net/q/messages/{{messageId}}?popreceipt={{popReceipt}}&sig=S",
        );
        let u = delete_url(&t, "id 1", "AgAA/+=").unwrap();
        assert_eq!(
            u.expose(),
            "https://a.queue.core.windows.net/q/messages/id%201?popreceipt=AgAA%2F%2B%3D&sig=S"
        );
        assert_eq!(
            delete_url(&Secret::new("https://x/{{messageId}}"), "a", "b"),
            Err(SignedUrlError::Placeholder("{{popReceipt}}"))
        );
        assert!(check_signed_url(&Secret::new("http://127.0.0.1:1/a?sig=s")).is_ok());
        let err = check_signed_url(&Secret::new("http://example.com/a?sig=SECRET")).unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
        assert!(check_signed_url(&Secret::new("ftp://example.com/a")).is_err());
    }
}
