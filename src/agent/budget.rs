//! Budgets: turns, tokens and wall time per round, money across the run and its fix rounds.
//! A budget is checked before each model request; the request that crosses a line is the last
//! one, and the agent stops with [`StopReason::Budget`] keeping its partial work.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::agent::config::{AgentConfig, Price};

/// Which budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// `agent.max_turns`.
    Turns,
    /// `agent.max_tokens`.
    Tokens,
    /// `agent.max_seconds`.
    Time,
    /// `agent.max_cost_usd`.
    Cost,
}

/// Why a round stopped without the model calling `finish`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// A budget ran out.
    Budget {
        /// Which one.
        kind: BudgetKind,
        /// What was used, in the budget's unit.
        used: f64,
        /// The limit.
        limit: f64,
    },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Budget { kind, used, limit } => match kind {
                BudgetKind::Turns => {
                    write!(f, "turn budget exhausted: {used} of {limit} model requests")
                }
                BudgetKind::Tokens => write!(f, "token budget exhausted: {used} of {limit} tokens"),
                BudgetKind::Time => {
                    write!(f, "time budget exhausted: {used:.1} of {limit} seconds")
                }
                BudgetKind::Cost => write!(f, "cost budget exhausted: ${used:.4} of ${limit:.2}"),
            },
        }
    }
}

/// What a round (or the whole run) used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Model requests made.
    pub turns: u32,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Dollars, from the price table (0 when the model has no price).
    pub cost_usd: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Usage {
    /// Adds another round's usage.
    pub fn add(&mut self, other: &Usage) {
        self.turns += other.turns;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
        self.seconds += other.seconds;
    }
}

/// The budget of one round.
#[derive(Debug, Clone)]
pub struct Budget {
    started: Instant,
    max_turns: u32,
    max_tokens: u64,
    max_time: Duration,
    max_cost: Option<f64>,
    price: Option<Price>,
    /// Dollars spent by earlier rounds of the same run.
    cost_before: f64,
    /// This round's usage.
    pub usage: Usage,
}

impl Budget {
    /// A fresh round budget; `cost_before` is what earlier rounds spent.
    pub fn new(config: &AgentConfig, cost_before: f64) -> Self {
        Budget {
            started: Instant::now(),
            max_turns: config.max_turns,
            max_tokens: config.max_tokens,
            max_time: Duration::from_secs(config.max_seconds),
            max_cost: config.max_cost_usd,
            price: config.prices.get(&config.model).cloned(),
            cost_before,
            usage: Usage::default(),
        }
    }

    /// Time since the round started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Time left before the time budget runs out.
    pub fn remaining_time(&self) -> Duration {
        self.max_time.saturating_sub(self.started.elapsed())
    }

    /// Tokens left.
    pub fn remaining_tokens(&self) -> u64 {
        self.max_tokens
            .saturating_sub(self.usage.input_tokens + self.usage.output_tokens)
    }

    /// Counts one model reply.
    pub fn record_reply(&mut self, input_tokens: u64, output_tokens: u64) {
        self.usage.turns += 1;
        self.usage.input_tokens += input_tokens;
        self.usage.output_tokens += output_tokens;
        if let Some(p) = &self.price {
            self.usage.cost_usd += (input_tokens as f64 * p.input_per_mtok
                + output_tokens as f64 * p.output_per_mtok)
                / 1_000_000.0;
        }
    }

    /// The time budget's stop reason, for when a wait or request ran into it.
    pub fn time_exhausted(&self) -> StopReason {
        StopReason::Budget {
            kind: BudgetKind::Time,
            used: self.elapsed().as_secs_f64(),
            limit: self.max_time.as_secs_f64(),
        }
    }

    /// `Some(reason)` when no further model request may be made.
    pub fn check(&self) -> Option<StopReason> {
        let tokens = self.usage.input_tokens + self.usage.output_tokens;
        if self.usage.turns >= self.max_turns {
            return Some(StopReason::Budget {
                kind: BudgetKind::Turns,
                used: self.usage.turns as f64,
                limit: self.max_turns as f64,
            });
        }
        if tokens >= self.max_tokens {
            return Some(StopReason::Budget {
                kind: BudgetKind::Tokens,
                used: tokens as f64,
                limit: self.max_tokens as f64,
            });
        }
        if let Some(max) = self.max_cost {
            let spent = self.cost_before + self.usage.cost_usd;
            if spent >= max {
                return Some(StopReason::Budget {
                    kind: BudgetKind::Cost,
                    used: spent,
                    limit: max,
                });
            }
        }
        if self.remaining_time().is_zero() {
            return Some(self.time_exhausted());
        }
        None
    }

    /// The round's usage with its wall time filled in.
    pub fn finish(&self) -> Usage {
        Usage {
            seconds: self.elapsed().as_secs_f64(),
            ..self.usage.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        let mut c = AgentConfig {
            model: "m".into(),
            max_turns: 3,
            max_tokens: 1000,
            max_cost_usd: Some(0.01),
            ..AgentConfig::default()
        };
        c.prices.insert(
            "m".into(),
            Price {
                input_per_mtok: 1000.0,
                output_per_mtok: 2000.0,
            },
        );
        c
    }

    #[test]
    fn each_budget_stops() {
        let mut b = Budget::new(&config(), 0.0);
        assert_eq!(b.check(), None);
        b.record_reply(4, 1); // $0.006
        assert_eq!(b.check(), None);
        b.record_reply(4, 1); // $0.012
        assert!(matches!(
            b.check(),
            Some(StopReason::Budget {
                kind: BudgetKind::Cost,
                ..
            })
        ));

        let mut b = Budget::new(&config(), 0.0);
        b.record_reply(0, 0);
        b.record_reply(0, 0);
        b.record_reply(0, 0);
        assert!(matches!(
            b.check(),
            Some(StopReason::Budget {
                kind: BudgetKind::Turns,
                ..
            })
        ));

        let mut b = Budget::new(&config(), 0.0);
        b.record_reply(999, 1);
        assert!(matches!(
            b.check(),
            Some(StopReason::Budget {
                kind: BudgetKind::Tokens,
                ..
            })
        ));

        let b = Budget::new(&config(), 0.02);
        assert!(matches!(
            b.check(),
            Some(StopReason::Budget {
                kind: BudgetKind::Cost,
                ..
            })
        ));
    }
}
