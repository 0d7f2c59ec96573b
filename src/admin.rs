//! Operator commands: `streamstock status` and `streamstock dlq`.

use crate::app::{open_log, open_store};
use crate::config::{CommonArgs, DlqAction, DlqSelection, StatusArgs};
use crate::stream::dead_letter::DeadLetter;
use crate::worker::PROCESSOR_GROUP;
use anyhow::Context;
use serde_json::json;

pub async fn status(common: CommonArgs, args: StatusArgs) -> anyhow::Result<()> {
    let backend = open_log(&common, None).await?;
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
    Ok(())
}

pub async fn dlq(common: CommonArgs, action: DlqAction) -> anyhow::Result<()> {
    let log = open_log(&common, None).await?.log;
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
            let store = open_store(&common).await?;
            let letters = select(&*log, group, &selection).await?;
            let mut replayed = Vec::new();
            for letter in &letters {
                let Some(envelope) = &letter.envelope else {
                    println!(
                        "{}: not replayable (the entry was not a readable event); purge it instead",
                        letter.id
                    );
                    continue;
                };
                // Forget the failures first, so the replay gets every attempt.
                store
                    .clear_attempts(group, &envelope.event_id.to_string())
                    .await?;
                let receipt = log.append(envelope).await?;
                println!(
                    "{}: {} {} appended again as {}",
                    letter.id,
                    envelope.event_type,
                    envelope.event_id,
                    receipt.msg_id()
                );
                replayed.push(letter.id.clone());
            }
            let removed = log.remove_dead_letters(group, &replayed).await?;
            println!("replayed {removed} dead letter(s)");
            store.close().await;
        }
        DlqAction::Purge(selection) => {
            let ids: Vec<String> = select(&*log, group, &selection)
                .await?
                .into_iter()
                .map(|l| l.id)
                .collect();
            let removed = log.remove_dead_letters(group, &ids).await?;
            println!("purged {removed} dead letter(s)");
        }
    }
    Ok(())
}

async fn select(
    log: &dyn crate::stream::EventLog,
    group: &str,
    selection: &DlqSelection,
) -> anyhow::Result<Vec<DeadLetter>> {
    let count = log.dead_letter_count(group).await? as usize;
    let all = log.dead_letters(group, count.max(1)).await?;
    if selection.all {
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for id in &selection.ids {
        match all.iter().find(|l| &l.id == id) {
            Some(letter) => chosen.push(letter.clone()),
            None => anyhow::bail!("no dead letter with id {id} (see `streamstock dlq list`)"),
        }
    }
    Ok(chosen)
}
