/* SPDX-License-Identifier: GPL-2.0 */
/*
 * relay-kmod's in-kernel API: write records into a relay channel from any
 * context (task, softirq, hard IRQ, NMI), locklessly.
 *
 *	struct relay_chan *ch = relay_chan_get("events");	// process context
 *	...
 *	relay_chan_write(ch, MY_TYPE, &ev, sizeof(ev));	// any context
 *	...
 *	relay_chan_put(ch);
 *
 * Channels are created and destroyed from userspace (/dev/relay/control);
 * a reference keeps a channel's memory alive after it is destroyed.
 */
#ifndef RELAY_KMOD_H
#define RELAY_KMOD_H

#include <linux/types.h>

struct relay_chan;

struct relay_chan *relay_chan_get(const char *name);
void relay_chan_put(struct relay_chan *ch);
int relay_chan_write(struct relay_chan *ch, u16 type, const void *data, u32 len);

#endif
