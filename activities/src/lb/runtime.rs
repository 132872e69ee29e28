//! A client of HAProxy's runtime API over its admin socket: `show stat` for per-server weights,
//! status and session counts, `set server <backend>/<server> weight|state` to steer traffic.
//!
//! Every call opens its own connection (HAProxy's non-interactive mode: one command line, one
//! answer, then HAProxy closes). Writes are absolute, so repeating one is harmless; each write is
//! read back and checked before the call returns.

use std::path::PathBuf;
use std::time::Duration;

use signalbox_domain::traffic::{AdminState, LbStats, MAX_WEIGHT, ServerStats, Weights};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{Error, Result};

/// Bound on one command, connecting included: the admin socket answers in microseconds unless
/// HAProxy is gone.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// HAProxy's runtime API on one admin socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    socket: PathBuf,
}

fn invalid(field: &str, rule: impl Into<String>) -> Error {
    Error::Invalid(signalbox_domain::Error::invalid(field, rule))
}

fn io(socket: &std::path::Path, e: std::io::Error) -> Error {
    Error::Balancer(format!("{}: {e}", socket.display()))
}

impl RuntimeApi {
    /// The runtime API behind `socket` (an HAProxy `stats socket ... level admin`).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }

    /// Sends one command line (several commands may be joined with `;`) and returns the answer.
    pub async fn command(&self, line: &str) -> Result<String> {
        let io = |e: std::io::Error| io(&self.socket, e);
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
            stream.write_all(format!("{line}\n").as_bytes()).await.map_err(io)?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.map_err(io)?;
            Ok(answer)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(io(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer to {line:?} within {COMMAND_TIMEOUT:?}")))),
        }
    }

    /// The servers of `backend`, from `show stat`. An unknown backend is bad input; an answer
    /// that cannot be read is retried like any other I/O trouble.
    pub async fn stats(&self, backend: &str) -> Result<LbStats> {
        let csv = self.command("show stat").await?;
        parse_stat(&csv, backend).map_err(|e| match e {
            StatError::NoBackend => invalid("lb.backend", format!("HAProxy has no backend {backend}")),
            StatError::Malformed(m) => io(&self.socket, std::io::Error::new(std::io::ErrorKind::InvalidData, m)),
        })
    }

    /// Sets the weights of the named servers; returns the weights they had. Checks names and
    /// range first (bad input is refused before anything changes) and reads the result back.
    pub async fn set_weights(&self, backend: &str, weights: &Weights) -> Result<Weights> {
        let previous = self.check_weights(backend, weights).await?;
        let commands: Vec<String> = weights.iter().map(|(s, w)| format!("set server {backend}/{s} weight {w}")).collect();
        self.write(&commands).await?;
        let after = self.stats(backend).await?.weights();
        for (server, &w) in weights {
            if after.get(server) != Some(&w) {
                let message = format!("weight is {:?} after setting it to {w}", after.get(server));
                return Err(Error::Balancer(format!("server {server}: {message}")));
            }
        }
        Ok(previous)
    }

    /// Checks that `weights` names servers of `backend` with weights HAProxy takes; returns the
    /// weights they have. Changes nothing.
    pub async fn check_weights(&self, backend: &str, weights: &Weights) -> Result<Weights> {
        let before = self.stats(backend).await?.weights();
        for (server, &w) in weights {
            if !before.contains_key(server) {
                return Err(invalid("lb.weights", format!("{server} is not a server of backend {backend}")));
            }
            if w > MAX_WEIGHT {
                return Err(invalid("lb.weights", format!("{server}: weight {w} is above {MAX_WEIGHT}")));
            }
        }
        Ok(weights.keys().map(|s| (s.clone(), before[s])).collect())
    }

    /// Runs write commands in one exchange. HAProxy answers a successful `set` with nothing;
    /// any text is a refusal (unknown server, static algorithm, ...), which a retry repeats.
    async fn write(&self, commands: &[String]) -> Result<()> {
        if commands.is_empty() {
            return Ok(());
        }
        let answer = self.command(&commands.join("; ")).await?;
        let refusals: Vec<&str> = answer.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if refusals.is_empty() { Ok(()) } else { Err(invalid("lb", format!("HAProxy refused: {}", refusals.join(" | ")))) }
    }
}

/// The administrative state a `show stat` status implies.
pub fn admin_state(status: &str) -> AdminState {
    if status.starts_with("DRAIN") {
        AdminState::Drain
    } else if status.contains("MAINT") {
        AdminState::Maint
    } else {
        AdminState::Ready
    }
}

/// Why a `show stat` answer gave no servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatError {
    /// HAProxy has no such backend.
    NoBackend,
    /// The answer is not the CSV expected; says what is wrong.
    Malformed(String),
}

/// Parses `show stat` CSV (a `# pxname,svname,...` header, one row per proxy and server, a
/// backend's servers before its `BACKEND` row) into the servers of `backend`.
pub fn parse_stat(csv: &str, backend: &str) -> std::result::Result<LbStats, StatError> {
    let malformed = |m: String| StatError::Malformed(m);
    let mut lines = csv.lines();
    let header = lines.next().and_then(|h| h.strip_prefix("# ")).ok_or_else(|| malformed("show stat answered without its `# pxname,...` header".into()))?;
    let columns = split_csv(header);
    let col = |name: &str| columns.iter().position(|c| c == name).ok_or_else(|| malformed(format!("show stat has no column {name}")));
    let (px, sv, stot, status, weight) = (col("pxname")?, col("svname")?, col("stot")?, col("status")?, col("weight")?);
    let mut servers = Vec::new();
    let mut found = false;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f = split_csv(line);
        let field = |i: usize| f.get(i).map_or("", String::as_str);
        if field(px) != backend {
            continue;
        }
        match field(sv) {
            "BACKEND" => found = true,
            "FRONTEND" => {}
            name => servers.push(ServerStats {
                name: name.to_owned(),
                weight: field(weight).parse().map_err(|_| malformed(format!("server {name}: weight {:?} is not a number", field(weight))))?,
                status: field(status).to_owned(),
                sessions: field(stot).parse().map_err(|_| malformed(format!("server {name}: stot {:?} is not a number", field(stot))))?,
            }),
        }
    }
    // The BACKEND row follows its servers: without it, the backend is unknown or the answer cut short.
    if !found {
        return Err(StatError::NoBackend);
    }
    Ok(LbStats { backend: backend.to_owned(), servers })
}

/// Splits one CSV line; HAProxy quotes a field (doubling inner quotes) when it holds a comma.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("never empty").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,check_desc\n\
        fe,FRONTEND,,,0,0,4096,2,0,0,0,0,0,,,,,OPEN,,,\n\
        svc,a,0,0,0,0,,510,0,0,,0,,0,0,0,0,no check,50,1,\n\
        svc,b,0,0,0,0,,500,0,0,,0,,0,0,0,0,DRAIN,50,1,\"refused, twice \"\"really\"\"\"\n\
        svc,c,0,0,0,0,,990,0,0,,0,,0,0,0,0,MAINT,0,1,\n\
        svc,BACKEND,0,0,0,0,410,2000,0,0,0,0,,0,0,0,0,UP,100,2,\n\
        other,BACKEND,0,0,0,0,410,0,0,0,0,0,,0,0,0,0,UP,0,0,\n";

    #[test]
    fn reads_weights_sessions_and_states_of_one_backend() {
        let stats = parse_stat(STAT, "svc").unwrap();
        assert_eq!(stats.servers.len(), 3);
        assert_eq!(stats.weights(), Weights::from([("a".into(), 50), ("b".into(), 50), ("c".into(), 0)]));
        assert_eq!(stats.sessions()["c"], 990);
        let states: Vec<AdminState> = stats.servers.iter().map(|s| admin_state(&s.status)).collect();
        assert_eq!(states, vec![AdminState::Ready, AdminState::Drain, AdminState::Maint]);
        assert!(parse_stat(STAT, "other").unwrap().servers.is_empty());
    }

    #[test]
    fn an_unknown_backend_or_a_bad_answer_is_an_error() {
        assert_eq!(parse_stat(STAT, "nope").unwrap_err(), StatError::NoBackend);
        assert!(matches!(parse_stat("Unknown command\n", "svc"), Err(StatError::Malformed(_))));
        let garbled = STAT.replace(",510,", ",x,");
        assert!(matches!(parse_stat(&garbled, "svc"), Err(StatError::Malformed(m)) if m.contains("stot")));
    }

    #[test]
    fn quoted_fields_keep_their_commas_and_quotes() {
        assert_eq!(split_csv("a,\"b, c\",\"say \"\"hi\"\"\",d"), vec!["a", "b, c", "say \"hi\"", "d"]);
        assert_eq!(split_csv("x,,y,"), vec!["x", "", "y", ""]);
    }
}
