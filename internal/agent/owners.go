package agent

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// ownerError is an owner user or group that does not resolve; field is
// "user" or "group".
type ownerError struct {
	field string
	err   error
}

func (e *ownerError) Error() string     { return e.field + ": " + e.err.Error() }
func (e *ownerError) Unwrap() error     { return e.err }
func (e *ownerError) FieldName() string { return e.field }

// resolveOwner turns user/group names (or numeric ids) into ids; empty
// means "leave as the agent's user".
func resolveOwner(o config.Owner) (atomicdir.Owner, error) {
	owner := atomicdir.Owner{UID: -1, GID: -1}
	var errs []error
	if o.User != "" {
		u, err := lookupUser(o.User)
		if err != nil {
			errs = append(errs, &ownerError{"user", err})
		} else {
			owner.UID, _ = strconv.Atoi(u.Uid)
			if o.Group == "" {
				owner.GID, _ = strconv.Atoi(u.Gid)
			}
		}
	}
	if o.Group != "" {
		g, err := lookupGroup(o.Group)
		if err != nil {
			errs = append(errs, &ownerError{"group", err})
		} else {
			owner.GID, _ = strconv.Atoi(g.Gid)
		}
	}
	return owner, errors.Join(errs...)
}

func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		u, err := user.LookupId(name)
		if err != nil {
			return &user.User{Uid: name, Gid: "-1"}, nil //nolint:nilerr // a numeric uid need not exist in passwd
		}
		return u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q does not exist on this host", name)
	}
	return u, nil
}

func lookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return &user.Group{Gid: name}, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return nil, fmt.Errorf("group %q does not exist on this host", name)
	}
	return g, nil
}
