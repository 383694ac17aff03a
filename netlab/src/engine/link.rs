//! Link conditions (one-way delay, jitter, loss) and how the lab applies them: `tc netem` where the kernel
//! has it, otherwise the userspace wire ([`super::wire`]). The choice is made once per process.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable that forces the impairment mechanism: `auto` (default), `netem` or `wire`.
pub const IMPAIRMENT_ENV: &str = "NETLAB_IMPAIRMENT";

/// Conditions of one access link, applied in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConditions {
    /// One-way delay in milliseconds (default 0).
    pub delay_ms: u32,
    /// Jitter in milliseconds: each frame's delay is uniform in `delay ± jitter`, never below zero
    /// (default 0).
    pub jitter_ms: u32,
    /// Share of frames dropped, in percent, each direction independently (default 0).
    pub loss_percent: f32,
}

/// Link conditions that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConditions {
    /// Loss outside 0..=100 percent.
    #[error("loss {0}% is not a percentage: use a value from 0 to 100")]
    Loss(f32),
    /// Delay or jitter above the lab's limit.
    #[error("delay {delay_ms} ms with jitter {jitter_ms} ms is above the lab's limit of 10000 ms")]
    TooLong {
        /// The requested delay.
        delay_ms: u32,
        /// The requested jitter.
        jitter_ms: u32,
    },
}

impl LinkConditions {
    /// No impairment.
    pub const IDEAL: LinkConditions = LinkConditions {
        delay_ms: 0,
        jitter_ms: 0,
        loss_percent: 0.0,
    };

    /// A link with only a one-way delay.
    pub fn delay(delay_ms: u32) -> LinkConditions {
        LinkConditions {
            delay_ms,
            ..LinkConditions::IDEAL
        }
    }

    /// True when nothing needs to be applied.
    pub fn is_ideal(&self) -> bool {
        self.delay_ms == 0 && self.jitter_ms == 0 && self.loss_percent == 0.0
    }

    /// Checks the values before anything is built.
    pub fn validate(&self) -> Result<(), InvalidConditions> {
        if !(0.0..=100.0).contains(&self.loss_percent) {
            return Err(InvalidConditions::Loss(self.loss_percent));
        }
        if self.delay_ms.saturating_add(self.jitter_ms) > 10_000 {
            return Err(InvalidConditions::TooLong {
                delay_ms: self.delay_ms,
                jitter_ms: self.jitter_ms,
            });
        }
        Ok(())
    }

    /// The one-way delay.
    pub fn delay_duration(&self) -> Duration {
        Duration::from_millis(self.delay_ms.into())
    }

    /// Arguments for `tc qdisc add dev IF root` that apply these conditions with netem.
    pub fn netem_args(&self) -> Vec<String> {
        let mut a = vec!["netem".to_string()];
        if self.delay_ms > 0 || self.jitter_ms > 0 {
            a.push("delay".into());
            a.push(format!("{}ms", self.delay_ms));
            if self.jitter_ms > 0 {
                // netem's default jitter is uniform, like the wire's; unlike the wire it may reorder.
                a.push(format!("{}ms", self.jitter_ms));
            }
        }
        if self.loss_percent > 0.0 {
            a.push("loss".into());
            a.push(format!("{}%", self.loss_percent));
        }
        a
    }
}

impl fmt::Display for LinkConditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ideal() {
            return f.write_str("ideal");
        }
        write!(f, "{}ms", self.delay_ms)?;
        if self.jitter_ms > 0 {
            write!(f, "±{}ms", self.jitter_ms)?;
        }
        if self.loss_percent > 0.0 {
            write!(f, " {}% loss", self.loss_percent)?;
        }
        Ok(())
    }
}

/// How impaired links are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impairment {
    /// A veth pair with a netem qdisc on each end.
    Netem,
    /// Two TAP devices joined by the userspace wire process.
    Wire,
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Impairment::Netem => "netem",
            Impairment::Wire => "wire",
        })
    }
}

/// What the user asked for in [`IMPAIRMENT_ENV`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImpairmentChoice {
    /// Netem when the kernel has it, else the wire.
    Auto,
    /// Always this mechanism.
    Forced(Impairment),
}

impl FromStr for ImpairmentChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "auto" => Ok(ImpairmentChoice::Auto),
            "netem" => Ok(ImpairmentChoice::Forced(Impairment::Netem)),
            "wire" => Ok(ImpairmentChoice::Forced(Impairment::Wire)),
            other => Err(format!(
                "{IMPAIRMENT_ENV}={other:?}: use auto, netem or wire"
            )),
        }
    }
}

/// Resolves the mechanism once per process: `probe` says whether netem works and runs at most once.
pub fn impairment_for(choice: ImpairmentChoice, probe: impl FnOnce() -> bool) -> Impairment {
    static DETECTED: OnceLock<Impairment> = OnceLock::new();
    match choice {
        ImpairmentChoice::Forced(i) => i,
        ImpairmentChoice::Auto => *DETECTED.get_or_init(|| {
            if probe() {
                Impairment::Netem
            } else {
                Impairment::Wire
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_link_needs_nothing() {
        assert!(LinkConditions::default().is_ideal());
        assert!(!LinkConditions::delay(1).is_ideal());
        assert_eq!(LinkConditions::IDEAL.to_string(), "ideal");
        let c = LinkConditions {
            delay_ms: 25,
            jitter_ms: 5,
            loss_percent: 1.5,
        };
        assert_eq!(c.to_string(), "25ms±5ms 1.5% loss");
    }

    #[test]
    fn netem_arguments() {
        let c = LinkConditions {
            delay_ms: 25,
            jitter_ms: 5,
            loss_percent: 1.5,
        };
        assert_eq!(c.netem_args().join(" "), "netem delay 25ms 5ms loss 1.5%");
        assert_eq!(
            LinkConditions::delay(50).netem_args().join(" "),
            "netem delay 50ms"
        );
    }

    #[test]
    fn bad_conditions_are_refused_with_a_hint() {
        let e = LinkConditions {
            loss_percent: 120.0,
            ..LinkConditions::IDEAL
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("0 to 100"));
        assert!(
            LinkConditions {
                delay_ms: 9_000,
                jitter_ms: 2_000,
                loss_percent: 0.0
            }
            .validate()
            .is_err()
        );
        assert!(LinkConditions::delay(50).validate().is_ok());
    }

    #[test]
    fn conditions_read_from_toml_with_defaults() {
        let c: LinkConditions = toml::from_str("delay_ms = 40").unwrap();
        assert_eq!(c, LinkConditions::delay(40));
        assert!(toml::from_str::<LinkConditions>("delay = 40").is_err());
    }

    #[test]
    fn choice_parses_and_forced_choice_skips_the_probe() {
        assert_eq!(
            "".parse::<ImpairmentChoice>().unwrap(),
            ImpairmentChoice::Auto
        );
        assert!("tc".parse::<ImpairmentChoice>().is_err());
        let forced = ImpairmentChoice::Forced(Impairment::Wire);
        assert_eq!(
            impairment_for(forced, || panic!("no probe when forced")),
            Impairment::Wire
        );
    }
}
