//! Operator commands: `streamstock status`, `dlq` and `rebuild`.

use super::backends::{open_log, open_store};
use super::config::{CommonArgs, DlqAction, DlqSelection, RebuildArgs, StatusArgs};
use crate::store::dead_letters;
use crate::store::rebuild::TableChecksum;
use crate::stream::dead_letter::DeadLetter;
use crate::stream::PROCESSOR_GROUP;
use anyhow::Context;
use serde_json::json;

pub async fn status(common: CommonArgs, args: StatusArgs) -> anyhow::Result<()> {
    let backend = open_log(&common, None, None).await?;
    let group = PROCESSOR_GROUP;
    let stats = backend
        .log
        .partition_stats(group)
        .await
        .context("reading partition figures")?;
    let owners = backend
        .leases
        .owners(group, backend.log.partitions())
        .await
        .context("reading partition leases")?;
    let dead = backend
        .log
        .dead_letter_count(group)
        .await
        .context("counting dead letters")?;
    // The log's figures are what status is for: a database that cannot be
    // reached leaves the ledger's line unknown, not the whole report.
    let ledger = audit_ledger(&common).await;
    if args.json {
        let partitions: Vec<_> = stats
            .iter()
            .zip(&owners)
            .map(|(s, owner)| json!({ "partition": s.partition, "owner": owner, "length": s.length, "lag": s.lag, "pending": s.pending }))
            .collect();
        let report = json!({
            "event_log": backend.log.describe(),
            "group": group,
            "partitions": partitions,
            "lag": stats.iter().map(|s| s.lag).sum::<u64>(),
            "pending": stats.iter().map(|s| s.pending).sum::<u64>(),
            "dead_letters": dead,
            "ledger": ledger.as_ref().ok(),
            "ledger_error": ledger.as_ref().err().map(|e| format!("{e:#}")),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("event log: {}", backend.log.describe());
    println!("group:     {group}\n");
    println!(
        "{:>9}  {:<36}  {:>10}  {:>8}  {:>8}",
        "partition", "owner", "length", "lag", "pending"
    );
    for (s, owner) in stats.iter().zip(&owners) {
        println!(
            "{:>9}  {:<36}  {:>10}  {:>8}  {:>8}",
            s.partition,
            owner.as_deref().unwrap_or("(none)"),
            s.length,
            s.lag,
            s.pending
        );
    }
    println!(
        "\ntotal lag {}, pending {}, dead letters {dead}",
        stats.iter().map(|s| s.lag).sum::<u64>(),
        stats.iter().map(|s| s.pending).sum::<u64>()
    );
    match ledger {
        Err(e) => println!("stock ledger: not audited: {e:#}"),
        Ok(ledger) if ledger.mismatched == 0 => println!(
            "stock ledger: the last row of each of {} products equals its figures",
            ledger.products
        ),
        Ok(ledger) => println!(
            "stock ledger: {} of {} products disagree with their last ledger row (e.g. {})",
            ledger.mismatched,
            ledger.products,
            ledger
                .examples
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}

async fn audit_ledger(common: &CommonArgs) -> anyhow::Result<crate::store::ledger::LedgerAudit> {
    let store = open_store(common, None, None).await?;
    let audit = store
        .audit_ledger()
        .await
        .context("auditing the stock ledger");
    store.close().await;
    audit
}

pub async fn dlq(common: CommonArgs, action: DlqAction) -> anyhow::Result<()> {
    let log = open_log(&common, None, None).await?.log;
    let group = PROCESSOR_GROUP;
    match action {
        DlqAction::List { limit, json } => {
            let letters = log.dead_letters(group, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<18}  {:>4}  {:<18}  {:<36}  {:>8}  {:<20}  error",
                    "id", "part", "type", "key", "attempts", "failed at"
                );
                for l in &letters {
                    println!(
                        "{:<18}  {:>4}  {:<18}  {:<36}  {:>8}  {:<20}  {}",
                        l.id,
                        l.partition,
                        l.event_type(),
                        l.key(),
                        l.attempts,
                        l.failed_at.format("%Y-%m-%d %H:%M:%S"),
                        l.error
                    );
                }
            }
        }
        DlqAction::Replay(selection) => {
            let store = open_store(&common, None, None).await?;
            let replayed = for_each_page(&*log, group, &selection, |letters| {
                let (store, log) = (&store, &*log);
                async move {
                    let done = dead_letters::replay(store, log, group, &letters).await?;
                    report_replay(&letters, &done);
                    Ok(done.appended.len())
                }
            })
            .await?;
            println!("replayed {replayed} dead letter(s)");
            store.close().await;
        }
        DlqAction::Purge(selection) => {
            let purged = for_each_page(&*log, group, &selection, |letters| {
                let log = &*log;
                async move { Ok(dead_letters::purge(log, group, &letters).await? as usize) }
            })
            .await?;
            println!("purged {purged} dead letter(s)");
        }
    }
    Ok(())
}

fn report_replay(letters: &[DeadLetter], replayed: &dead_letters::Replayed) {
    for id in &replayed.not_replayable {
        println!("{id}: not replayable (the entry was not a readable event); purge it instead");
    }
    // `appended` follows the letters' order, skipping the unreadable.
    let envelopes = letters.iter().filter_map(|l| l.envelope.as_ref());
    for ((id, msg_id), envelope) in replayed.appended.iter().zip(envelopes) {
        println!(
            "{id}: {} {} appended again as {msg_id}",
            envelope.event_type, envelope.event_id
        );
    }
}

/// Runs `act` on the named letters, or with `--all` on every letter there
/// was at the start, a page of `dead_letters::ALL_PAGE` at a time (so no
/// page holds them all in memory); returns how many `act` says it handled.
/// Stops early once a page handles none (only unreplayable letters left).
async fn for_each_page<F, Fut>(
    log: &dyn crate::stream::EventLog,
    group: &str,
    selection: &DlqSelection,
    mut act: F,
) -> anyhow::Result<usize>
where
    F: FnMut(Vec<DeadLetter>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    if !selection.all {
        return act(select(log, group, Some(&selection.ids)).await?).await;
    }
    let at_start = log.dead_letter_count(group).await? as usize;
    let pages = at_start.div_ceil(dead_letters::ALL_PAGE);
    let mut handled = 0;
    for _ in 0..pages {
        let letters = select(log, group, None).await?;
        if letters.is_empty() {
            break;
        }
        let done = act(letters).await?;
        handled += done;
        if done == 0 {
            break;
        }
    }
    Ok(handled)
}

async fn select(
    log: &dyn crate::stream::EventLog,
    group: &str,
    ids: Option<&[String]>,
) -> anyhow::Result<Vec<DeadLetter>> {
    dead_letters::choose(log, group, ids)
        .await
        .map_err(|e| match e {
            dead_letters::DeadLetterError::Unknown(id) => {
                anyhow::anyhow!("no dead letter with id {id} (see `streamstock dlq list`)")
            }
            other => other.into(),
        })
}

/// Rebuilds the projections from the archive while no worker runs (a
/// worker applying events meanwhile would race the replay). On the embedded
/// log, opening it takes its lock, so a running `streamstock all` makes this
/// fail with that explanation; on Valkey, partition leases show live workers.
pub async fn rebuild(common: CommonArgs, args: RebuildArgs) -> anyhow::Result<()> {
    let backend = open_log(&common, None, None).await?;
    let owners = backend
        .leases
        .owners(PROCESSOR_GROUP, backend.log.partitions())
        .await
        .context("reading partition leases")?;
    if let Some((partition, owner)) = owners
        .iter()
        .enumerate()
        .find_map(|(p, o)| o.as_ref().map(|o| (p, o)))
    {
        anyhow::bail!(
            "worker {owner} owns partition {partition}: stop every worker before rebuilding the read model"
        );
    }
    let store = open_store(&common, None, None).await?;
    // The live model gets the windows' retention first, as the worker would
    // at its next pass, so before and after are compared under one rule.
    let windows = common.retention.windows();
    store
        .prune_windows(&windows)
        .await
        .context("applying the throughput windows' retention")?;
    let before = store.projection_checksums().await?;
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    let replayed = store
        .rebuild(&windows, &mut |done, total| {
            if last_report.elapsed() >= std::time::Duration::from_secs(1) || done == total {
                eprintln!("replayed {done} of {total} archived events");
                last_report = std::time::Instant::now();
            }
        })
        .await
        .context("rebuilding the read model (nothing was changed)")?;
    let after = store.projection_checksums().await?;
    store.close().await;
    let identical = before == after;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let tables: Vec<_> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| {
                json!({"table": a.table, "rows_before": b.rows, "rows_after": a.rows,
                "checksum_before": b.checksum, "checksum_after": a.checksum, "identical": a == b})
            })
            .collect();
        let report = json!({"replayed": replayed, "seconds": seconds,
            "identical": identical, "tables": tables});
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_rebuild_table(replayed, seconds, &before, &after);
    Ok(())
}

/// `rebuild`'s report as a table: each table's rows and checksum before
/// and after, and the verdict.
fn print_rebuild_table(
    replayed: u64,
    seconds: f64,
    before: &[TableChecksum],
    after: &[TableChecksum],
) {
    println!("replayed {replayed} events in {seconds:.1} s\n");
    println!(
        "{:<16}  {:>10}  {:>10}  {:<32}  {:<32}  result",
        "table", "rows before", "rows after", "checksum before", "checksum after"
    );
    for (b, a) in before.iter().zip(after) {
        println!(
            "{:<16}  {:>10}  {:>10}  {:<32}  {:<32}  {}",
            a.table,
            b.rows,
            a.rows,
            b.checksum,
            a.checksum,
            if a == b { "identical" } else { "CHANGED" }
        );
    }
    println!(
        "\n{}",
        if before == after {
            "the rebuilt read model is identical to the one it replaced"
        } else {
            "the rebuilt read model differs from the one it replaced (see CHANGED above)"
        }
    );
}
