//! A mail receiver: a real SMTP server (RFC 5321 subset) on loopback that
//! keeps what it accepts in memory, and an HTTP mailbox to read it back.
//!
//! - SMTP: `EHLO`/`HELO`, `MAIL FROM`, `RCPT TO` (an address without `@`
//!   gets `550`), `DATA` (dot-unstuffed, `552` above [`MAX_MESSAGE`]),
//!   `RSET`, `NOOP`, `QUIT`; anything else `502`. No TLS, no AUTH: it is a
//!   test and demo receiver like Mailpit or Postfix's `smtp-sink`.
//! - Every accepted DATA is one delivery. Messages are kept by their
//!   `Message-ID`: a second delivery of the same id (what a sender that
//!   crashed between the server's `250` and its own record does) is counted
//!   in `duplicates` and not stored twice, as mailbox providers collapse it.
//! - HTTP: `GET /messages` → `[{seq, message_id, from, to, subject,
//!   deliveries, text, html}]` with base64 / quoted-printable parts
//!   decoded; `GET /stats` → `{accepted, duplicates, stored}`.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::server::{serve, Running};
use super::SimError;

/// The largest message accepted (bytes of DATA).
pub const MAX_MESSAGE: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Mail {
    pub seq: u64,
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// How many times this Message-ID was delivered.
    pub deliveries: u32,
    pub text: String,
    pub html: String,
    #[serde(skip)]
    pub raw: String,
}

#[derive(Default)]
struct Inbox {
    mails: Vec<Mail>,
    accepted: u64,
    duplicates: u64,
}

/// The receiver's shared state.
#[derive(Default)]
pub struct Mailbox {
    inbox: Mutex<Inbox>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mailbox {
    pub fn mails(&self) -> Vec<Mail> {
        lock(&self.inbox).mails.clone()
    }

    /// (deliveries accepted, of which duplicates by Message-ID)
    pub fn stats(&self) -> (u64, u64) {
        let i = lock(&self.inbox);
        (i.accepted, i.duplicates)
    }

    fn deliver(&self, from: String, to: Vec<String>, raw: String) {
        let mut i = lock(&self.inbox);
        i.accepted += 1;
        let parsed = parse(&raw);
        let message_id = parsed.header("message-id").unwrap_or_default();
        if !message_id.is_empty() {
            if let Some(m) = i.mails.iter_mut().find(|m| m.message_id == message_id) {
                m.deliveries += 1;
                i.duplicates += 1;
                return;
            }
        }
        let seq = i.mails.len() as u64 + 1;
        let subject = parsed.header("subject").unwrap_or_default();
        let (text, html) = parsed.bodies();
        i.mails.push(Mail { seq, message_id, from, to, subject, deliveries: 1, text, html, raw });
    }
}

/// A running receiver: SMTP and the HTTP mailbox.
pub struct SmtpSim {
    pub mailbox: Arc<Mailbox>,
    pub smtp_addr: std::net::SocketAddr,
    pub http: Running,
    smtp_task: tokio::task::JoinHandle<()>,
}

impl SmtpSim {
    /// Listens for SMTP on `smtp` and serves the mailbox on `http`.
    pub async fn start(smtp: &str, http: &str) -> Result<SmtpSim, SimError> {
        let mailbox = Arc::new(Mailbox::default());
        let listener =
            TcpListener::bind(smtp).await.map_err(|e| SimError::Bind { addr: smtp.into(), message: e.to_string() })?;
        let smtp_addr =
            listener.local_addr().map_err(|e| SimError::Bind { addr: smtp.into(), message: e.to_string() })?;
        let mb = mailbox.clone();
        let smtp_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let mb = mb.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(stream, &mb).await {
                        tracing::debug!(error = %e, "smtp session ended");
                    }
                });
            }
        });
        let router = Router::new()
            .route("/messages", get(|s: State<Arc<Mailbox>>| async move { Json(s.mails()) }))
            .route(
                "/stats",
                get(|s: State<Arc<Mailbox>>| async move {
                    let (accepted, duplicates) = s.stats();
                    Json(json!({"accepted": accepted, "duplicates": duplicates, "stored": s.mails().len()}))
                }),
            )
            .with_state(mailbox.clone());
        let http = serve(router, http).await?;
        Ok(SmtpSim { mailbox, smtp_addr, http, smtp_task })
    }

    pub async fn stop(self) {
        self.smtp_task.abort();
        self.http.stop().await;
    }
}

fn address(arg: &str) -> Option<String> {
    let a = arg.trim();
    let a = a.split_once('<').map_or(a, |(_, rest)| rest.split('>').next().unwrap_or(""));
    let a = a.split_whitespace().next().unwrap_or("").trim();
    Some(a.to_string())
}

async fn session(stream: TcpStream, mailbox: &Mailbox) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 geoclock-mailbox ESMTP ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-geoclock-mailbox\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n"
        } else if upper.starts_with("HELO") {
            b"250 geoclock-mailbox\r\n"
        } else if let Some(arg) = upper.strip_prefix("MAIL FROM:").map(|_| &cmd[10..]) {
            from = address(arg);
            to.clear();
            b"250 OK\r\n"
        } else if let Some(arg) = upper.strip_prefix("RCPT TO:").map(|_| &cmd[8..]) {
            match address(arg) {
                _ if from.is_none() => b"503 MAIL first\r\n",
                Some(a) if a.contains('@') && !a.starts_with('@') && !a.ends_with('@') => {
                    to.push(a);
                    b"250 OK\r\n"
                }
                _ => b"550 no such mailbox\r\n",
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                w.write_all(b"503 need MAIL and RCPT first\r\n").await?;
                continue;
            }
            w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            let mut too_big = false;
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                if data.len() + l.len() > MAX_MESSAGE {
                    too_big = true;
                } else {
                    data.push_str(l);
                }
            }
            if too_big {
                w.write_all(b"552 message too large\r\n").await?;
            } else {
                mailbox.deliver(from.take().unwrap_or_default(), std::mem::take(&mut to), data);
                w.write_all(b"250 OK queued\r\n").await?;
            }
            continue;
        } else if upper == "RSET" {
            from = None;
            to.clear();
            b"250 OK\r\n"
        } else if upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 command not implemented\r\n"
        };
        w.write_all(reply).await?;
    }
}

/// A message split into headers and body (enough MIME for tests and the
/// demo's mailbox: single part or one level of multipart).
struct Parsed {
    headers: Vec<(String, String)>,
    body: String,
}

fn split_message(raw: &str) -> Parsed {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in head.lines() {
        if l.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(l.trim());
            }
        } else if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Parsed { headers, body: body.to_string() }
}

fn parse(raw: &str) -> Parsed {
    split_message(raw)
}

impl Parsed {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| decode_words(v))
    }

    fn decoded_body(&self) -> String {
        let enc = self.header("content-transfer-encoding").unwrap_or_default().to_ascii_lowercase();
        match enc.as_str() {
            "base64" => {
                let compact: String = self.body.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default()
            }
            "quoted-printable" => quoted_printable(&self.body),
            _ => self.body.clone(),
        }
    }

    /// (text/plain, text/html) bodies.
    fn bodies(&self) -> (String, String) {
        let ctype = self.header("content-type").unwrap_or_default();
        let lower = ctype.to_ascii_lowercase();
        if lower.starts_with("multipart/") {
            let boundary = ctype
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary=").map(|b| b.trim_matches('"').to_string()));
            let Some(b) = boundary else { return (String::new(), String::new()) };
            let (mut text, mut html) = (String::new(), String::new());
            for part in self.body.split(&format!("--{b}")).skip(1) {
                if part.starts_with("--") {
                    break;
                }
                let p = split_message(part.trim_start_matches(['\r', '\n']));
                let (t, h) = p.bodies();
                if text.is_empty() {
                    text = t;
                }
                if html.is_empty() {
                    html = h;
                }
            }
            return (text, html);
        }
        if lower.starts_with("text/html") {
            (String::new(), self.decoded_body())
        } else {
            (self.decoded_body(), String::new())
        }
    }
}

fn quoted_printable(s: &str) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (b.get(i + 1), b.get(i + 2)) {
                if let Ok(v) = u8::from_str_radix(&format!("{}{}", *h as char, *l as char), 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`).
fn decode_words(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("=?") {
        let Some(end) = rest[start + 2..].find("?=").map(|e| start + 2 + e) else { break };
        let word = &rest[start + 2..end];
        let parts: Vec<&str> = word.splitn(3, '?').collect();
        let decoded = match parts.as_slice() {
            [_, enc, text] if enc.eq_ignore_ascii_case("b") => {
                base64::engine::general_purpose::STANDARD.decode(text).ok().and_then(|b| String::from_utf8(b).ok())
            }
            [_, enc, text] if enc.eq_ignore_ascii_case("q") => Some(quoted_printable(&text.replace('_', " "))),
            _ => None,
        };
        let Some(d) = decoded else { break };
        let between = &rest[..start];
        if !between.trim().is_empty() {
            out.push_str(between);
        }
        out.push_str(&d);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_multipart_base64_and_encoded_words() {
        let raw = "Subject: =?utf-8?b?w4lsw6huZQ==?= is on the way\r\nMessage-ID: <a@b>\r\nContent-Type: multipart/alternative; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd29ybGQ=\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>a=3Db</p>=\r\n!\r\n--XX--\r\n";
        let p = parse(raw);
        assert_eq!(p.header("subject").unwrap(), "Élène is on the way");
        assert_eq!(p.header("message-id").unwrap(), "<a@b>");
        let (t, h) = p.bodies();
        assert_eq!(t, "hello world");
        assert_eq!(h.trim(), "<p>a=b</p>!");
    }

    #[test]
    fn addresses_are_taken_from_angle_brackets() {
        assert_eq!(address(" <ann@x.example> SIZE=100").unwrap(), "ann@x.example");
        assert_eq!(address("bob@x.example").unwrap(), "bob@x.example");
    }
}
