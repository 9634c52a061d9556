// Package sdnotify tells systemd about the agent's life cycle (sd_notify(3))
// so the unit can be Type=notify: READY once the first SVIDs are on disk,
// STATUS while waiting for the Workload API, STOPPING on shutdown.
//
// Outside systemd (no $NOTIFY_SOCKET: a terminal, launchd, tests) every call
// is a silent no-op, so callers never branch on the platform.
package sdnotify

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to the service manager. The zero value is
// ready to use.
type Notifier struct{}

// New returns a Notifier.
func New() *Notifier { return &Notifier{} }

// Ready reports that start-up is complete (first SVIDs written). It returns
// whether a notification was actually delivered; false with a nil error means
// the process does not run under systemd (or the unit is not Type=notify).
func (n *Notifier) Ready(status string) (bool, error) {
	return n.send(daemon.SdNotifyReady, status)
}

// Status updates the one-line status shown by `systemctl status`.
func (n *Notifier) Status(status string) (bool, error) {
	return n.send("", status)
}

// Reloading reports that a configuration reload has begun; Ready must follow
// when it is done (applied or refused). MONOTONIC_USEC is what lets systemd
// (Type=notify-reload, 253+) tie this message to the reload it asked for;
// older versions ignore the field.
func (n *Notifier) Reloading(status string) (bool, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return false, fmt.Errorf("sdnotify: CLOCK_MONOTONIC: %w", err)
	}
	usec := uint64(ts.Sec)*1_000_000 + uint64(ts.Nsec)/1_000
	return n.send(daemon.SdNotifyReloading+"\nMONOTONIC_USEC="+strconv.FormatUint(usec, 10), status)
}

// Watchdog is the keep-alive ping of a unit with WatchdogSec=.
func (n *Notifier) Watchdog() (bool, error) {
	return n.send(daemon.SdNotifyWatchdog, "")
}

// WatchdogInterval is the unit's WatchdogSec= ($WATCHDOG_USEC, when
// $WATCHDOG_PID is this process), or 0 when systemd expects no pings.
func (n *Notifier) WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// Stopping reports that the agent is shutting down.
func (n *Notifier) Stopping() (bool, error) {
	return n.send(daemon.SdNotifyStopping, "")
}

func (n *Notifier) send(state, status string) (bool, error) {
	var lines []string
	if state != "" {
		lines = append(lines, state)
	}
	if status != "" {
		// A newline would start a new assignment: keep STATUS one line.
		lines = append(lines, "STATUS="+strings.ReplaceAll(status, "\n", " "))
	}
	if len(lines) == 0 {
		return false, nil
	}
	// unsetEnvironment=false: children (exec reloads) must not inherit the
	// socket, but the agent notifies more than once, so the variable is
	// kept and a child could otherwise claim to be the main process; NotifyAccess=main in
	// the unit makes systemd ignore messages from any other pid anyway.
	ok, err := daemon.SdNotify(false, strings.Join(lines, "\n"))
	if err != nil {
		return false, fmt.Errorf("sdnotify: %s: %w", strings.Join(lines, " "), err)
	}
	return ok, nil
}
