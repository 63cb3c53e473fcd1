//! The Kafka load: Produce of one 1 KiB-value record batch (acks=1), built once and sent again
//! and again, or Fetch of the topic's first `--records` records from offset 0 upward, up to
//! 64 KiB a request, on partition 0 of one topic. `--op fill` is no load but its preparation:
//! it produces records until the topic holds `--records`, which a fetch load needs (an
//! identity that may only consume cannot write them itself). [`wire`] encodes requests and
//! reads responses; [`connection`] runs one connection.
//!
//! The load talks only to the address it is given: it never asks for Metadata and never
//! connects to the brokers a Metadata response would name, so a proxy in front of a broker
//! sees every request. Every response is checked: its correlation id must be its request's,
//! and every error code in it zero.

mod connection;
mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tokio::io::AsyncWriteExt;

use crate::load::{self, JsonFields, LoadArgs, Outcome, ReadBuffer};
use connection::Work;

/// The Kafka load's command line. Of the shared options, `--ratio` and `--keys` do not apply.
#[derive(Args)]
pub(crate) struct KafkaArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// What every request does.
    #[arg(long, value_enum)]
    pub op: Op,
    /// The topic produced to and fetched from (partition 0).
    #[arg(long, default_value = "empire-announce")]
    pub topic: String,
    /// Bytes of the value of the record every Produce carries.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Most bytes a Fetch asks for (the request's and the partition's maximum).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(i32).range(1..))]
    pub fetch_max_bytes: i32,
    /// Fetch: records read, from offset 0 up to this one and again from 0; the topic must
    /// hold as many (`--op fill` writes them). Fill: records the topic must hold.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(i64).range(1..))]
    pub records: i64,
    /// Do not create the topic first (Produce and Fill): for an identity that may produce but
    /// not create topics. Fetch never creates it.
    #[arg(long)]
    pub no_create: bool,
}

/// What every request of the load does.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Op {
    /// Produce v8 of a record batch of one record, acks=1.
    Produce,
    /// Fetch v11 from offset 0 upward, wrapping at `--records`.
    Fetch,
    /// No load: produce until the topic holds `--records` records, then stop.
    Fill,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Produce => "produce",
            Op::Fetch => "fetch",
            Op::Fill => "fill",
        }
    }
}

/// Prepares the load (creating the topic to produce to, or learning how far the topic to
/// fetch goes), opens every connection, then runs the load and returns what it measured.
pub(crate) async fn run(args: &KafkaArgs) -> anyhow::Result<Outcome> {
    let (target, source) = (args.load.target, args.load.source);
    let work = match args.op {
        Op::Produce => Work::Produce {
            request: produce_request(args).await?,
        },
        Op::Fetch => {
            let per_fetch = survey(args)
                .await
                .with_context(|| format!("fetching from topic {} before the load", args.topic))?;
            Work::Fetch {
                max_bytes: args.fetch_max_bytes,
                records: args.records,
                per_fetch,
            }
        }
        Op::Fill => bail!("--op fill writes records and runs no load"),
    };
    let mut streams = Vec::with_capacity(args.load.connections);
    for _ in 0..args.load.connections {
        streams.push(load::connect(target, source).await?);
    }
    let work = Arc::new(work);
    let topic: Arc<str> = args.topic.as_str().into();
    let load = Arc::new(args.load.start());
    load::drive(load, streams, |stream, load, _seed| {
        connection::run(stream, load, work.clone(), topic.clone())
    })
    .await
}

/// Creates the topic unless told not to, and returns the Produce request of the load (with
/// correlation id 0, which each request replaces): a batch of one record of `--value-size`
/// bytes, stamped now.
async fn produce_request(args: &KafkaArgs) -> anyhow::Result<Vec<u8>> {
    if !args.no_create {
        create_topic(args)
            .await
            .with_context(|| format!("creating topic {}", args.topic))?;
    }
    let value: Vec<u8> = (0..args.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let batch = wire::record_batch(&value, i64::try_from(now)?);
    let mut request = Vec::new();
    wire::encode_produce(&mut request, 0, &args.topic, &batch);
    Ok(request)
}

/// Produces records, [`FILL_BATCH`] requests at a time, until the topic holds `--records`;
/// returns how many it holds then. The first request is a single record, whose offset says how
/// many the topic held: Produce is all an identity that may produce is sure to be allowed.
pub(crate) async fn fill(args: &KafkaArgs) -> anyhow::Result<i64> {
    const FILL_BATCH: i64 = 100;
    let mut request = produce_request(args).await?;
    let mut stream = load::connect(args.load.target, args.load.source).await?;
    let mut responses = ReadBuffer::new();
    let mut correlation_id = 0;
    let mut held: Option<i64> = None;
    loop {
        let count = match held {
            None => 1,
            Some(held) if held >= args.records => return Ok(held),
            Some(held) => FILL_BATCH.min(args.records - held),
        };
        let first = correlation_id + 1;
        let mut out = Vec::new();
        for _ in 0..count {
            correlation_id += 1;
            wire::set_correlation_id(&mut request, correlation_id);
            out.extend_from_slice(&request);
        }
        stream.write_all(&out).await?;
        for expected in first..=correlation_id {
            let (got, produced) = responses
                .next(&mut stream, |buf| {
                    let Some((frame, len)) = wire::cut(buf)? else {
                        return Ok::<_, wire::WireError>(None);
                    };
                    let produced = wire::produced(frame.body, &args.topic)?;
                    Ok(Some(((frame.correlation_id, produced), len)))
                })
                .await?;
            if got != expected {
                bail!("a Produce response with correlation id {got} where {expected} was expected");
            }
            if produced.error_code != wire::NONE {
                bail!("Produce answered error {}", produced.error_code);
            }
            held = Some(held.unwrap_or(0).max(produced.base_offset + 1));
        }
    }
}

/// Sends one request, `encode`d with correlation id 1, on a connection of its own and returns
/// the body of its response.
async fn call(args: &KafkaArgs, encode: impl FnOnce(&mut Vec<u8>, i32)) -> anyhow::Result<Vec<u8>> {
    let mut stream = load::connect(args.load.target, args.load.source).await?;
    let mut request = Vec::new();
    encode(&mut request, 1);
    stream.write_all(&request).await?;
    let (correlation_id, body) = ReadBuffer::new()
        .next(&mut stream, |buf| {
            Ok::<_, wire::WireError>(
                wire::cut(buf)?
                    .map(|(frame, len)| ((frame.correlation_id, frame.body.to_vec()), len)),
            )
        })
        .await?;
    if correlation_id != 1 {
        bail!("the response has correlation id {correlation_id}, the request 1");
    }
    Ok(body)
}

/// Creates the topic with one partition; a topic that exists already is fine.
async fn create_topic(args: &KafkaArgs) -> anyhow::Result<()> {
    let body = call(args, |out, id| {
        wire::encode_create_topic(out, id, &args.topic)
    })
    .await?;
    match wire::create_topic_error(&body, &args.topic)? {
        wire::NONE | wire::TOPIC_ALREADY_EXISTS => Ok(()),
        code => bail!(
            "CreateTopics v{} answered error {code}",
            wire::CREATE_TOPICS_VERSION
        ),
    }
}

/// Fetches once from offset 0, at most `--fetch-max-bytes`, and checks the response's error
/// codes.
async fn fetch_first(args: &KafkaArgs) -> anyhow::Result<wire::Fetched> {
    let body = call(args, |out, id| {
        wire::encode_fetch(out, id, &args.topic, 0, args.fetch_max_bytes)
    })
    .await?;
    let fetched = wire::fetched(&body, &args.topic)?;
    if fetched.error_code != wire::NONE || fetched.partition_error_code != wire::NONE {
        bail!(
            "Fetch v{} answered error {} (partition: {})",
            wire::FETCH_VERSION,
            fetched.error_code,
            fetched.partition_error_code
        );
    }
    Ok(fetched)
}

/// Checks that the topic holds `--records` records, and returns how many a fetch of
/// `--fetch-max-bytes` from offset 0 returns, by which each connection's next offset moves.
async fn survey(args: &KafkaArgs) -> anyhow::Result<i64> {
    let fetched = fetch_first(args).await?;
    if fetched.high_watermark < args.records {
        bail!(
            "the topic holds {} records and the load reads {}: fill it first (--op fill)",
            fetched.high_watermark,
            args.records
        );
    }
    match fetched.offsets {
        Some((0, last)) if last < fetched.high_watermark => Ok(last + 1),
        Some((first, last)) => bail!(
            "records {first}..={last} from offset 0, with high watermark {}",
            fetched.high_watermark
        ),
        None => bail!("no whole record batch from offset 0"),
    }
}

/// The JSON fields and the words that describe this load in the report, with the bytes the
/// measured requests and responses carried (`bytes`, `mb_per_sec` in 10^6 bytes a second).
pub(crate) fn describe(args: &KafkaArgs, total: &Outcome) -> (JsonFields, String) {
    let mb_per_sec = total.bytes as f64 / args.load.duration as f64 / 1e6;
    let mut fields = JsonFields::new();
    fields.insert("protocol".into(), "kafka".into());
    fields.insert("op".into(), args.op.name().into());
    fields.insert("topic".into(), args.topic.clone().into());
    let words = match args.op {
        Op::Produce => {
            fields.insert("value_size".into(), args.value_size.into());
            format!(
                "Produce v{} of {} B values to {}",
                wire::PRODUCE_VERSION,
                args.value_size,
                args.topic
            )
        }
        Op::Fetch | Op::Fill => {
            fields.insert("fetch_max_bytes".into(), args.fetch_max_bytes.into());
            fields.insert("records".into(), args.records.into());
            format!(
                "Fetch v{} of up to {} B from {}",
                wire::FETCH_VERSION,
                args.fetch_max_bytes,
                args.topic
            )
        }
    };
    fields.insert("bytes".into(), total.bytes.into());
    fields.insert(
        "mb_per_sec".into(),
        ((mb_per_sec * 100.0).round() / 100.0).into(),
    );
    (fields, format!("{words}, {mb_per_sec:.1} MB/s"))
}
