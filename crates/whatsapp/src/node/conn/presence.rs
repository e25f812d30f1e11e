//! `<presence/>`: availability (and the offline flush it triggers).

use super::*;

impl Conn {
    pub(super) async fn presence(&mut self, element: Element) -> Result<(), Gone> {
        if element.attr("to").is_some() {
            // Directed presence and subscriptions need rosters: not yet.
            return Ok(());
        }
        let bound = self.bound.as_ref().expect("session stage is bound");
        let (bare, resource, conn_id) = (bound.bare.clone(), bound.resource.clone(), bound.conn_id);
        match element.attr("type") {
            None => {
                let priority = element
                    .child("priority", CLIENT_NS)
                    .and_then(|p| p.text().trim().parse::<i8>().ok())
                    .unwrap_or(0);
                let first = !self.available;
                if first {
                    // Drain what was stored while unavailable before live messages flow,
                    // then once more for what was stored in between.
                    self.flush_offline(&bare).await?;
                }
                self.shared
                    .router
                    .set_presence(&bare, &resource, conn_id, true, priority);
                self.available = true;
                if first {
                    self.flush_offline(&bare).await?;
                }
                Ok(())
            }
            Some("unavailable") => {
                self.shared
                    .router
                    .set_presence(&bare, &resource, conn_id, false, 0);
                self.available = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
