//! The outbox's queue of frames: a `VecDeque` whose front element lives
//! inline, so a connection that never has more than one frame waiting
//! (the welcome, a join ack, a message now and then to an idle member)
//! never allocates a ring. Measured at 10 000 idle connections, the ring
//! the welcome used to allocate was 144 of ~930 bytes per connection.

use std::collections::VecDeque;

/// A FIFO queue; invariant: `rest` is empty whenever `front` is `None`.
#[derive(Debug)]
pub(super) struct Queue<T> {
    front: Option<T>,
    rest: VecDeque<T>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            front: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> Queue<T> {
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    #[inline]
    pub fn push_back(&mut self, item: T) {
        if self.front.is_none() {
            self.front = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    #[inline]
    pub fn pop_front(&mut self) -> Option<T> {
        let front = self.front.take();
        self.front = self.rest.pop_front();
        front
    }

    #[inline]
    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.front.as_mut()
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        match i {
            0 => self.front.as_ref(),
            _ => self.rest.get(i - 1),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.front.iter().chain(self.rest.iter())
    }

    /// The elements from index `from` on.
    pub fn iter_from_mut(&mut self, from: usize) -> impl Iterator<Item = &mut T> {
        let rest_from = from.saturating_sub(1).min(self.rest.len());
        self.front.iter_mut().skip(from).chain(self.rest.range_mut(rest_from..))
    }

    /// Capacity of the ring behind the front element.
    pub fn ring_capacity(&self) -> usize {
        self.rest.capacity()
    }

    /// Gives the ring's memory back; only when empty.
    pub fn release_ring(&mut self) {
        debug_assert!(self.is_empty());
        self.rest = VecDeque::new();
    }
}

impl<T> std::ops::Index<usize> for Queue<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        self.get(i).expect("queue index in bounds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_element_needs_no_ring() {
        let mut q = Queue::default();
        q.push_back(1);
        assert_eq!((q.len(), q.ring_capacity()), (1, 0));
        assert_eq!(q.pop_front(), Some(1));
        assert!(q.is_empty());
        q.push_back(2);
        assert_eq!(q.ring_capacity(), 0);
    }

    #[test]
    fn keeps_fifo_order_across_front_and_ring() {
        let mut q = Queue::default();
        let mut model = VecDeque::new();
        let mut next = 0;
        // A fixed pattern of pushes and pops, compared with a VecDeque.
        for round in 0..200usize {
            for _ in 0..(round % 5) {
                q.push_back(next);
                model.push_back(next);
                next += 1;
            }
            for _ in 0..(round % 3) {
                assert_eq!(q.pop_front(), model.pop_front());
            }
            assert_eq!(q.len(), model.len());
            assert!(q.iter().eq(model.iter()));
            for (i, m) in model.iter().enumerate() {
                assert_eq!(q[i], *m);
            }
            assert_eq!(q.get(model.len()), None);
            for from in 0..=model.len() + 1 {
                let got: Vec<i32> = q.iter_from_mut(from).map(|x| *x).collect();
                let want: Vec<i32> = model.iter().skip(from).copied().collect();
                assert_eq!(got, want, "from {from}");
            }
        }
    }

    #[test]
    fn the_ring_can_be_given_back_when_empty() {
        let mut q = Queue::default();
        for i in 0..10 {
            q.push_back(i);
        }
        while q.pop_front().is_some() {}
        assert!(q.ring_capacity() > 0);
        q.release_ring();
        assert_eq!(q.ring_capacity(), 0);
    }
}
