//! The one table every run ends with: a row per figure, with the target it
//! is checked against (if any) and whether it was met.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A figure without a target.
    Info,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

/// Rows collected over a run, printed once at the end.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// A figure without a target.
    pub fn info(&mut self, scenario: &str, metric: &str, value: impl Into<String>) {
        self.push(scenario, metric, value, "", Verdict::Info);
    }

    /// A figure checked against a target.
    pub fn check(&mut self, scenario: &str, metric: &str, value: impl Into<String>, target: &str, met: bool) {
        self.push(scenario, metric, value, target, if met { Verdict::Met } else { Verdict::Missed });
    }

    fn push(&mut self, scenario: &str, metric: &str, value: impl Into<String>, target: &str, verdict: Verdict) {
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value: value.into(),
            target: target.into(),
            verdict,
        });
    }

    /// A line printed under the table (e.g. "the generator was the bottleneck").
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| scenario | metric | value | target | met |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let verdict = match r.verdict {
                Verdict::Met => "yes",
                Verdict::Missed => "**NO**",
                Verdict::Info => "",
            };
            let _ = writeln!(out, "| {} | {} | {} | {} | {} |", r.scenario, r.metric, r.value, r.target, verdict);
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        out
    }
}
