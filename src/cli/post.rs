//! `olive post`: publishes one message on a key through the websocket
//! protocol and waits for olive's `ack` (sent once the broker has taken
//! the message), printing the message id.

use serde_json::{Value, json};

use super::client::{ConnectArgs, Failure, Session, Status};

/// The `ref` of the one publish frame, to pick its answer.
const REF: u64 = 1;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The object key to publish on (a key, never a pattern).
    #[arg(value_name = "KEY")]
    pub key: String,
    /// The comment text: publishes {"text": TEXT}.
    #[arg(value_name = "TEXT", required_unless_present = "data", conflicts_with = "data")]
    pub text: Option<String>,
    /// Publish this JSON value as the data instead of {"text": TEXT}.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: Args) -> Status {
    match post(&args).await {
        Ok(id) => {
            println!("{id}");
            Status::Ok
        }
        Err(failure) => {
            eprintln!("olive post: {failure}");
            failure.status
        }
    }
}

async fn post(args: &Args) -> Result<String, Failure> {
    let data: Value = match (&args.data, &args.text) {
        (Some(data), _) => {
            serde_json::from_str(data).map_err(|e| Failure::usage(format!("--data is not JSON: {e}")))?
        }
        (None, Some(text)) => json!({"text": text}),
        (None, None) => return Err(Failure::usage("give TEXT or --data")),
    };
    let mut session = Session::connect(&args.connect).await?;
    session.send(&json!({"type": "publish", "key": args.key, "data": data, "ref": REF})).await?;
    let answer = async {
        loop {
            let frame = session.recv().await?.frame;
            let ours = frame.reference.as_ref().is_none_or(|r| *r == json!(REF));
            match frame.kind.as_str() {
                "ack" if ours => return Ok(frame.id.unwrap_or_default()),
                "error" if ours => {
                    let code = frame.code.as_deref().unwrap_or("?");
                    return Err(Failure::from_error_frame(code, frame.message.as_deref().unwrap_or("")));
                }
                _ => {}
            }
        }
    };
    let timeout = args.connect.timeout;
    let result = tokio::time::timeout(timeout, answer).await.unwrap_or_else(|_| {
        Err(Failure::new(
            Status::Unavailable,
            format!("no ack within {timeout:?}: the message may or may not have been published"),
        ))
    });
    session.close().await;
    result
}
