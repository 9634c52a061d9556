package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// Modes for the directories the agent creates. Output files carry their own
// modes (keys 0600/0640), so the directory only has to let the consuming
// service traverse it; sockets likewise carry their own modes.
const (
	OutputDirMode fs.FileMode = 0o755
	SocketDirMode fs.FileMode = 0o755
)

// Dir is one directory the agent needs before it starts writing or listening.
type Dir struct {
	Path string
	Mode fs.FileMode
	// User owns the directory (group: the user's primary group, unless GID
	// says otherwise). Empty means the current user: nothing is chowned.
	User string
	// Group (a name or a numeric id) is the directory's group when set: an
	// output's directory takes the group of the output's owner, as
	// atomicdir.MakeDir's rule says. Empty: the user's primary group.
	Group string
	// Exclusive: the agent writes the directory with atomicdir.Writer, so
	// an existing one must be a real directory of User's (the agent's user
	// when User is empty): atomicdir.CheckDir, the rule `config validate`,
	// `run` and reload apply too. Without it a directory of someone else's
	// is used as it is when no User is asked for (a shared socket dir).
	Exclusive bool
}

// OutputDir is the Dir for an output's `dir:`; group is the group of the
// output's owner ("" when it has none).
func OutputDir(path, owner, group string) Dir {
	return Dir{Path: path, Mode: OutputDirMode, User: owner, Group: group, Exclusive: true}
}

// SocketDir is the Dir holding a unix socket the agent listens on (admin
// socket, proxy listeners); socket may carry a "unix://" prefix.
func SocketDir(socket, owner string) Dir {
	return Dir{Path: filepath.Dir(strings.TrimPrefix(socket, "unix://")), Mode: SocketDirMode, User: owner}
}

// systemDirs are never chmodded or chowned, whoever asks: a socket path such
// as /run/x.sock must not turn /run into the agent's directory.
var systemDirs = map[string]bool{
	"/": true, "/tmp": true, "/var/tmp": true, "/run": true, "/var/run": true, "/etc": true,
	"/var": true, "/var/lib": true, "/var/db": true, "/usr": true, "/usr/local": true,
	"/usr/local/etc": true, "/usr/local/var": true, "/opt": true, "/srv": true, "/home": true,
	"/Library": true, "/Library/Logs": true, "/private": true, "/private/tmp": true,
	"/private/var": true, "/Users": true,
}

// EnsureDirs creates each directory that is missing with its mode and owner
// (parents: 0755, owned by the caller), and removes from an existing one
// owned by the wanted user any permission bit Mode does not allow (it never
// widens: an operator's 0750 stays 0750). It never takes over a directory
// someone else owns: that is an error naming the path and both owners. The
// agent calls it at start; under systemd `service prepare` (ExecStartPre=+,
// as root) calls it before the sandbox makes the file system read-only.
func EnsureDirs(dirs ...Dir) error {
	for _, d := range dirs {
		if err := ensureDir(d); err != nil {
			return err
		}
	}
	return nil
}

type owner struct {
	name     string
	uid, gid int
}

func lookupOwner(name string) (*owner, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	return &owner{name: name, uid: uid, gid: gid}, nil
}

// LookupUID is the user lookup of `install --user` and `service prepare
// --user`, for a command that checks on behalf of that user (`config
// validate --user`): name's uid, or an error naming the user.
func LookupUID(name string) (int, error) {
	o, err := lookupOwner(name)
	if err != nil {
		return 0, err
	}
	if o == nil {
		return 0, errors.New("user: empty name")
	}
	return o.uid, nil
}

func lookupGID(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}

func ensureDir(d Dir) error {
	p := d.Path
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("service: directory %q must be an absolute, clean path", p)
	}
	if d.Mode == 0 || d.Mode&^fs.ModePerm != 0 {
		return fmt.Errorf("service: directory %s: mode %v must be permission bits only", p, d.Mode)
	}
	o, err := lookupOwner(d.User)
	if err != nil {
		return fmt.Errorf("service: directory %s: %w", p, err)
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		uid, gid := -1, -1
		if o != nil {
			uid, gid = o.uid, o.gid
		}
		if d.Group != "" {
			if gid, err = lookupGID(d.Group); err != nil {
				return fmt.Errorf("service: directory %s: %w", p, err)
			}
		}
		err = atomicdir.MakeDir(p, d.Mode, uid, gid)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("service: %w", err)
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		// Lost a race with another creator: check what is there now.
		fi, err = os.Lstat(p)
	}
	if err != nil {
		return fmt.Errorf("service: directory %s: %w", p, err)
	}
	return fixExisting(p, fi, d, o)
}

func fixExisting(p string, fi fs.FileInfo, d Dir, o *owner) error {
	mode := d.Mode
	wantUID := os.Geteuid()
	wantName := "the agent's user"
	if o != nil {
		wantUID, wantName = o.uid, o.name
	}
	if d.Exclusive {
		if err := atomicdir.CheckDir(p, wantUID, wantName); err != nil {
			return fmt.Errorf("service: %w", err)
		}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("service: directory %s is a symlink; configure the directory it points to", p)
	}
	if !fi.IsDir() {
		return fmt.Errorf("service: %s exists and is not a directory", p)
	}
	if systemDirs[p] || fi.Mode()&fs.ModeSticky != 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("service: directory %s: no owner information", p)
	}
	if int(st.Uid) != wantUID {
		if o == nil {
			// The caller did not ask for an owner: a directory of someone
			// else's (e.g. a shared socket dir) is used as it is.
			return nil
		}
		return fmt.Errorf("service: directory %s is owned by uid %d, not %s (uid %d): chown it to %s or point the config at a directory of its own",
			p, st.Uid, wantName, wantUID, wantName)
	}
	// Only ever tighten: an operator's 0750 stays 0750, a stray 0777
	// loses what Mode does not allow.
	if have := fi.Mode().Perm(); have&^mode != 0 {
		if err := narrow(p, have&mode, wantUID); err != nil {
			return fmt.Errorf("service: directory %s: chmod %04o (was %04o): %w", p, have&mode, have, err)
		}
	}
	return nil
}

// narrow chmods the directory at p on an opened handle: never through a
// symlink swapped in since it was looked at, never one of someone else's.
func narrow(p string, mode fs.FileMode, uid int) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid {
		return errors.New("changed while being checked")
	}
	return f.Chmod(mode)
}

// Prepare creates what the agent needs before it starts: each output
// directory (OutputDirMode) and the directory of each unix socket the agent
// listens on (SocketDirMode), owned by user ("" = the caller). It is the body
// of `identity-agent service prepare --config FILE --user USER` (the unit's
// ExecStartPre=+, as root) and of the same step at the start of `run`.
// Do not pass the Workload API socket: its directory belongs to SPIRE.
func Prepare(user string, outputDirs, listenSockets []string) error {
	dirs := make([]Dir, 0, len(outputDirs)+len(listenSockets))
	for _, d := range outputDirs {
		dirs = append(dirs, OutputDir(d, user, ""))
	}
	for _, s := range listenSockets {
		dirs = append(dirs, SocketDir(s, user))
	}
	return EnsureDirs(dirs...)
}
