//! The clocks the daemon reads, behind one trait so that tests run in virtual time.
//!
//! Three readings: the wall clock (what expiry timestamps mean), CLOCK_BOOTTIME (monotonic, and it
//! keeps counting while the machine is suspended), and the clock tokio's timers count, which stops
//! during suspend (tokio-rs/tokio#3185). Deadlines are kept in boot time; the gap between boot time
//! and the timer clock growing means a suspend happened, and every deadline is looked at again.

use std::time::Duration;

use jiff::Timestamp;

/// A source of time. Implementations must be cheap: they are read on every scheduling decision.
pub trait Clock: Send + Sync + 'static {
    /// The wall clock.
    fn wall(&self) -> Timestamp;
    /// Time since boot, counting suspend.
    fn boot(&self) -> Duration;
    /// Time on the clock tokio's timers use (stops during suspend), since an arbitrary origin.
    fn timer(&self) -> Duration;
}

/// The real clocks.
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }

    fn boot(&self) -> Duration {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // The kernel never reports a negative boot time; saturate rather than trust that blindly.
        Duration::new(
            u64::try_from(now.tv_sec).unwrap_or(0),
            u32::try_from(now.tv_nsec).unwrap_or(0),
        )
    }

    fn timer(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock for tests: follows tokio's (paused) timer clock, plus jumps the test injects.
#[cfg(test)]
pub struct TestClock {
    origin: tokio::time::Instant,
    wall_origin: Timestamp,
    /// Time that passed without the timer clock seeing it (a simulated suspend).
    suspended: std::sync::Mutex<Duration>,
    /// A step of the wall clock alone (an NTP step), in seconds; may be negative.
    wall_step: std::sync::Mutex<i64>,
}

#[cfg(test)]
impl TestClock {
    pub fn new(wall_origin: Timestamp) -> TestClock {
        TestClock {
            origin: tokio::time::Instant::now(),
            wall_origin,
            suspended: std::sync::Mutex::new(Duration::ZERO),
            wall_step: std::sync::Mutex::new(0),
        }
    }

    /// Simulates a suspend of `duration`: wall and boot time jump, the timer clock does not.
    pub fn suspend(&self, duration: Duration) {
        let mut suspended = self
            .suspended
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *suspended += duration;
    }

    /// Steps the wall clock alone by `seconds` (an NTP correction).
    pub fn step_wall(&self, seconds: i64) {
        let mut step = self
            .wall_step
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *step += seconds;
    }

    fn suspended(&self) -> Duration {
        *self
            .suspended
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn wall(&self) -> Timestamp {
        let step = *self
            .wall_step
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let elapsed = self.timer() + self.suspended();
        let elapsed = jiff::SignedDuration::try_from(elapsed).unwrap_or(jiff::SignedDuration::MAX);
        self.wall_origin
            .saturating_add(elapsed)
            .and_then(|wall| wall.saturating_add(jiff::SignedDuration::from_secs(step)))
            .unwrap_or(self.wall_origin)
    }

    fn boot(&self) -> Duration {
        // Start well after boot, as a real machine would be.
        Duration::from_secs(1000) + self.timer() + self.suspended()
    }

    fn timer(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Converts a wall-clock instant to boot time, given one simultaneous reading of both clocks.
/// Instants in the past map below `boot_now` (saturating at zero).
pub fn wall_to_boot(instant: Timestamp, wall_now: Timestamp, boot_now: Duration) -> Duration {
    let offset = instant.duration_since(wall_now);
    if offset.is_negative() {
        let back = Duration::try_from(offset.abs()).unwrap_or(Duration::MAX);
        boot_now.saturating_sub(back)
    } else {
        let ahead = Duration::try_from(offset).unwrap_or(Duration::MAX);
        boot_now.saturating_add(ahead)
    }
}

/// Converts a boot-time instant to the wall clock, for logs and status.
pub fn boot_to_wall(instant: Duration, wall_now: Timestamp, boot_now: Duration) -> Timestamp {
    let signed = |duration: Duration| {
        jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX)
    };
    let result = if instant >= boot_now {
        wall_now.saturating_add(signed(instant - boot_now))
    } else {
        wall_now.saturating_sub(signed(boot_now - instant))
    };
    result.unwrap_or(wall_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_saturate() {
        let wall = Timestamp::from_second(1_800_000_000).unwrap();
        let boot = Duration::from_secs(5000);
        let later = Timestamp::from_second(1_800_000_600).unwrap();
        assert_eq!(wall_to_boot(later, wall, boot), Duration::from_secs(5600));
        let earlier = Timestamp::from_second(1_799_999_000).unwrap();
        assert_eq!(wall_to_boot(earlier, wall, boot), Duration::from_secs(4000));
        assert_eq!(wall_to_boot(Timestamp::MIN, wall, boot), Duration::ZERO);
        assert_eq!(boot_to_wall(Duration::from_secs(5600), wall, boot), later);
        assert_eq!(boot_to_wall(Duration::from_secs(4000), wall, boot), earlier);
        let _ = boot_to_wall(Duration::MAX, wall, boot);
    }

    #[test]
    fn system_boot_clock_moves_forward() {
        let clock = SystemClock::new();
        let first = clock.boot();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.boot() > first);
        assert!(clock.boot() >= clock.timer());
    }

    #[tokio::test(start_paused = true)]
    async fn test_clock_suspend_moves_boot_and_wall_but_not_timer() {
        let clock = TestClock::new(Timestamp::from_second(1_800_000_000).unwrap());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(clock.timer(), Duration::from_secs(10));
        clock.suspend(Duration::from_secs(3600));
        assert_eq!(clock.timer(), Duration::from_secs(10));
        assert_eq!(clock.boot(), Duration::from_secs(1000 + 10 + 3600));
        assert_eq!(clock.wall().as_second(), 1_800_000_000 + 3610);
        clock.step_wall(-60);
        assert_eq!(clock.wall().as_second(), 1_800_000_000 + 3550);
        assert_eq!(clock.boot(), Duration::from_secs(4610));
    }
}
