//! The modified round-robin scheduler (Gettys & Freier §9): all available
//! requests were read into buffers; now serve them in passes, one request
//! per connection per pass, at most `quantum` per connection per turn, so
//! no connection captures the server while one system call still serves
//! many requests.

/// Reusable pass lists, so a turn allocates nothing.
#[derive(Default)]
pub struct Scheduler {
    pass: Vec<usize>,
    next: Vec<usize>,
}

impl Scheduler {
    /// Serve `batch` round-robin. `serve_one(key)` answers one request and
    /// returns whether the connection may have another; a connection that
    /// says no leaves the rotation for this turn. Cost: O(requests served +
    /// connections).
    pub fn run(&mut self, batch: &[usize], quantum: u32, mut serve_one: impl FnMut(usize) -> bool) {
        self.pass.clear();
        self.pass.extend_from_slice(batch);
        for _ in 0..quantum {
            if self.pass.is_empty() {
                break;
            }
            self.next.clear();
            for &key in &self.pass {
                if serve_one(key) {
                    self.next.push(key);
                }
            }
            std::mem::swap(&mut self.pass, &mut self.next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(queued: &[u32], quantum: u32) -> (Vec<usize>, Vec<u32>) {
        let mut left = queued.to_vec();
        let mut served = Vec::new();
        let keys: Vec<usize> = (0..queued.len()).collect();
        Scheduler::default().run(&keys, quantum, |k| {
            if left[k] == 0 {
                return false;
            }
            left[k] -= 1;
            served.push(k);
            left[k] > 0
        });
        (served, left)
    }

    #[test]
    fn greedy_connection_is_interleaved_and_capped_by_the_quantum() {
        // Connections with 100, 1 and 1 queued requests.
        let (served, left) = order(&[100, 1, 1], 4);
        assert_eq!(served, vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(left, vec![96, 0, 0]);
    }

    #[test]
    fn every_connection_gets_a_turn_before_anyone_gets_a_second() {
        let (served, _) = order(&[3, 3, 3], 2);
        assert_eq!(served, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn quantum_zero_serves_nothing() {
        assert!(order(&[5], 0).0.is_empty());
    }
}
