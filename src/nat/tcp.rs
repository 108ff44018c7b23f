//! The TCP session state machine (after RFC 6146 section 3.5.2 and RFC 7857 section 2.2).
//!
//! It only tracks what a NAT needs to choose a timer: whether the connection is opening,
//! established, closing, or was reset. Sequence numbers are not checked.

use super::Direction;
use super::config::Timeouts;
use crate::wire::Tcp;
use std::time::Duration;

/// Where a TCP session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// SYN seen from inside only.
    SynOut = 1,
    /// SYN seen from outside only (endpoint-independent filtering, or a forward).
    SynIn = 2,
    /// SYN seen both ways (handshake or simultaneous open), or a connection picked up mid-stream.
    Established = 3,
    /// FIN seen from inside.
    FinOut = 4,
    /// FIN seen from outside.
    FinIn = 5,
    /// FIN seen both ways.
    FinBoth = 6,
    /// RST seen; kept for the transitory time (RFC 7857) in case it was not accepted.
    Reset = 7,
}

impl TcpState {
    pub fn from_u8(v: u8) -> Option<TcpState> {
        use TcpState::*;
        Some(match v {
            1 => SynOut,
            2 => SynIn,
            3 => Established,
            4 => FinOut,
            5 => FinIn,
            6 => FinBoth,
            7 => Reset,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            SynOut => "SYN_SENT",
            SynIn => "SYN_RECV",
            Established => "ESTABLISHED",
            FinOut => "FIN_OUT",
            FinIn => "FIN_IN",
            FinBoth => "CLOSING",
            Reset => "RESET",
        }
    }

    /// The state of a session created by a segment with `flags` travelling in `dir`.
    pub fn initial(dir: Direction, flags: u8) -> TcpState {
        if flags & Tcp::RST != 0 {
            TcpState::Reset
        } else if flags & Tcp::SYN != 0 {
            match dir {
                Direction::Outbound => TcpState::SynOut,
                Direction::Inbound => TcpState::SynIn,
            }
        } else if dir == Direction::Outbound {
            // Mid-stream pickup (e.g. after a restart without snapshot): trust the inside host.
            TcpState::Established
        } else {
            TcpState::SynIn
        }
    }

    /// The state after a segment with `flags` travelling in `dir`.
    pub fn next(self, dir: Direction, flags: u8) -> TcpState {
        use Direction::*;
        use TcpState::*;
        let syn = flags & Tcp::SYN != 0;
        let fin = flags & Tcp::FIN != 0;
        if flags & Tcp::RST != 0 {
            return Reset;
        }
        match (self, dir) {
            (SynOut, Inbound) if syn => Established,
            (SynIn, Outbound) if syn => Established,
            (Established, Outbound) if fin => FinOut,
            (Established, Inbound) if fin => FinIn,
            (FinOut, Inbound) if fin => FinBoth,
            (FinIn, Outbound) if fin => FinBoth,
            // A new connection on the same 5-tuple after a close or a reset.
            (FinBoth | Reset, Outbound) if syn => SynOut,
            (FinBoth | Reset, Inbound) if syn => SynIn,
            // RFC 6146: any other segment after a RST means the RST was not accepted.
            (Reset, _) => Established,
            (s, _) => s,
        }
    }

    /// The idle timeout that applies in this state.
    pub fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            TcpState::Established => t.tcp_established,
            TcpState::SynOut | TcpState::SynIn => t.tcp_opening,
            _ => t.tcp_transitory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;
    use TcpState::*;
    const SYN: u8 = Tcp::SYN;
    const ACK: u8 = Tcp::ACK;
    const FIN: u8 = Tcp::FIN | Tcp::ACK;
    const RST: u8 = Tcp::RST;

    fn run(start: (Direction, u8), steps: &[(Direction, u8)]) -> TcpState {
        steps
            .iter()
            .fold(TcpState::initial(start.0, start.1), |s, (d, f)| {
                s.next(*d, *f)
            })
    }

    #[test]
    fn rfc5382_req2_three_way_handshake() {
        assert_eq!(run((Outbound, SYN), &[]), SynOut);
        assert_eq!(run((Outbound, SYN), &[(Inbound, SYN | ACK)]), Established);
        assert_eq!(
            run((Outbound, SYN), &[(Inbound, SYN | ACK), (Outbound, ACK)]),
            Established
        );
    }

    #[test]
    fn rfc5382_req2_simultaneous_open() {
        assert_eq!(run((Outbound, SYN), &[(Inbound, SYN)]), Established);
        assert_eq!(run((Inbound, SYN), &[(Outbound, SYN)]), Established);
    }

    #[test]
    fn fin_both_ways_closes() {
        let est = [(Inbound, SYN | ACK), (Outbound, ACK)];
        let mut steps = est.to_vec();
        steps.push((Outbound, FIN));
        assert_eq!(run((Outbound, SYN), &steps), FinOut);
        steps.push((Inbound, FIN));
        assert_eq!(run((Outbound, SYN), &steps), FinBoth);
        let mut other = est.to_vec();
        other.extend([(Inbound, FIN), (Outbound, FIN)]);
        assert_eq!(run((Outbound, SYN), &other), FinBoth);
    }

    #[test]
    fn rfc7857_rst_is_transitory_and_recoverable() {
        let s = run((Outbound, SYN), &[(Inbound, SYN | ACK), (Inbound, RST)]);
        assert_eq!(s, Reset);
        assert_eq!(s.timeout(&Timeouts::default()), Duration::from_secs(240));
        // Traffic after the RST: it was not accepted.
        assert_eq!(s.next(Outbound, ACK), Established);
        // A new SYN reopens.
        assert_eq!(s.next(Outbound, SYN), SynOut);
    }

    #[test]
    fn timers_by_state() {
        let t = Timeouts::default();
        assert_eq!(Established.timeout(&t), Duration::from_secs(7440));
        assert_eq!(SynOut.timeout(&t), Duration::from_secs(240));
        assert_eq!(FinBoth.timeout(&t), Duration::from_secs(240));
    }

    #[test]
    fn state_round_trips_through_u8() {
        for s in [SynOut, SynIn, Established, FinOut, FinIn, FinBoth, Reset] {
            assert_eq!(TcpState::from_u8(s as u8), Some(s));
        }
        assert_eq!(TcpState::from_u8(0), None);
    }
}
