//! How observations move one component's state.

use crate::config::Hysteresis;
use crate::state::HealthState;

/// One component's state and the streaks of observations behind it.
#[derive(Debug, Clone)]
pub(crate) struct ComponentState {
    state: HealthState,
    hysteresis: Hysteresis,
    /// Bad observations in a row, of any severity.
    bad: u32,
    /// Unhealthy observations in a row.
    unhealthy: u32,
    /// Degraded observations in a row.
    mild: u32,
    /// Good observations in a row.
    good: u32,
}

impl ComponentState {
    pub(crate) fn new(hysteresis: Hysteresis) -> Self {
        Self {
            state: HealthState::Healthy,
            hysteresis,
            bad: 0,
            unhealthy: 0,
            mild: 0,
            good: 0,
        }
    }

    pub(crate) fn state(&self) -> HealthState {
        self.state
    }

    /// Takes one observation: `Healthy` for a good one, `Degraded` or `Unhealthy` for a bad one
    /// of that severity. Returns whether the state changed.
    pub(crate) fn observe(&mut self, observation: HealthState) -> bool {
        if self.state == HealthState::Failed {
            return false;
        }
        let h = self.hysteresis;
        let next = match observation {
            HealthState::Healthy => {
                self.good += 1;
                self.bad = 0;
                self.unhealthy = 0;
                self.mild = 0;
                if self.good >= h.recover_after {
                    HealthState::Healthy
                } else {
                    self.state
                }
            }
            HealthState::Failed => HealthState::Failed,
            severity => {
                self.good = 0;
                self.bad += 1;
                if severity == HealthState::Unhealthy {
                    self.unhealthy += 1;
                    self.mild = 0;
                } else {
                    self.unhealthy = 0;
                    self.mild += 1;
                }
                if self.unhealthy >= h.unhealthy_after {
                    HealthState::Unhealthy
                } else if self.mild >= h.unhealthy_after {
                    HealthState::Degraded
                } else if self.bad >= h.degrade_after {
                    self.state.max(HealthState::Degraded)
                } else {
                    self.state
                }
            }
        };
        let changed = next != self.state;
        self.state = next;
        changed
    }

    /// Moves straight to `state`, forgetting the streaks. `Failed` stays `Failed`.
    pub(crate) fn set(&mut self, state: HealthState) -> bool {
        if self.state == HealthState::Failed || self.state == state {
            return false;
        }
        self.state = state;
        self.bad = 0;
        self.unhealthy = 0;
        self.mild = 0;
        self.good = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use HealthState::*;

    fn run(h: Hysteresis, observations: &[HealthState]) -> Vec<HealthState> {
        let mut c = ComponentState::new(h);
        observations
            .iter()
            .map(|o| {
                c.observe(*o);
                c.state()
            })
            .collect()
    }

    #[test]
    fn a_single_blip_does_not_move_it() {
        let states = run(
            Hysteresis::default(),
            &[Healthy, Unhealthy, Healthy, Healthy],
        );
        assert_eq!(states, [Healthy; 4]);
    }

    #[test]
    fn failures_in_a_row_degrade_then_make_unhealthy() {
        let states = run(Hysteresis::default(), &[Unhealthy; 5]);
        assert_eq!(states, [Healthy, Degraded, Degraded, Unhealthy, Unhealthy]);
    }

    #[test]
    fn recovery_needs_good_observations_in_a_row() {
        let mut obs = vec![Unhealthy; 4];
        obs.extend([Healthy, Healthy, Unhealthy, Healthy, Healthy, Healthy]);
        let states = run(Hysteresis::default(), &obs);
        assert_eq!(states[3], Unhealthy);
        assert_eq!(
            &states[4..],
            [
                Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy
            ]
        );
    }

    #[test]
    fn milder_evidence_in_a_full_streak_lowers_unhealthy_to_degraded() {
        let mut obs = vec![Unhealthy; 4];
        obs.extend([Degraded; 4]);
        let states = run(Hysteresis::default(), &obs);
        assert_eq!(&states[4..], [Unhealthy, Unhealthy, Unhealthy, Degraded]);
    }

    #[test]
    fn failed_is_for_good() {
        let mut c = ComponentState::new(Hysteresis::none());
        c.observe(Failed);
        assert!(!c.observe(Healthy));
        assert!(!c.set(Healthy));
        assert_eq!(c.state(), Failed);
    }

    /// The reference: the state follows from the streaks at the end of the history alone.
    fn model(h: Hysteresis, history: &[HealthState]) -> HealthState {
        let mut state = Healthy;
        for i in 0..history.len() {
            let seen = &history[..=i];
            if seen.contains(&Failed) {
                return Failed;
            }
            let streak = |pred: fn(&HealthState) -> bool| {
                seen.iter().rev().take_while(|o| pred(o)).count() as u32
            };
            let good = streak(|o| *o == Healthy);
            let bad = streak(|o| *o != Healthy);
            let unhealthy = streak(|o| *o == Unhealthy);
            let mild = streak(|o| *o == Degraded);
            state = if good >= h.recover_after {
                Healthy
            } else if good > 0 {
                state
            } else if unhealthy >= h.unhealthy_after {
                Unhealthy
            } else if mild >= h.unhealthy_after {
                Degraded
            } else if bad >= h.degrade_after {
                state.max(Degraded)
            } else {
                state
            };
        }
        state
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference_model(
            (d, u, r) in (1u32..5, 0u32..5, 1u32..5),
            observations in proptest::collection::vec(
                prop_oneof![6 => Just(Healthy), 3 => Just(Degraded), 4 => Just(Unhealthy), 1 => Just(Failed)],
                0..60,
            ),
        ) {
            let h = Hysteresis::builder()
                .degrade_after(d)
                .unhealthy_after(d + u)
                .recover_after(r)
                .build()
                .unwrap();
            let mut c = ComponentState::new(h);
            for (i, o) in observations.iter().enumerate() {
                c.observe(*o);
                prop_assert_eq!(c.state(), model(h, &observations[..=i]), "after {:?}", &observations[..=i]);
            }
        }
    }
}
