package redistransition

import (
	"bufio"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// CheckCertlessAccess rejects a redis.conf in which a TLS client without
// a certificate could authenticate as a user that has no password: an
// open tls-port with tls-auth-clients optional (or no) together with a
// password-less user — the default user without requirepass, or any
// enabled ACL user with nopass. With "optional" Redis lets such a client
// AUTH without any certificate (redis/redis#14638), so the pair must never
// appear, whatever phase. Directives are applied in order (later ones
// win, as in Redis); users in an aclfile cannot be seen from here, so an
// aclfile with optional/no is rejected too. include is not followed.
func CheckCertlessAccess(conf string) error {
	st := confState{tlsAuthClients: "yes", users: map[string]*aclUser{"default": {on: true, nopass: true}}}
	sc := bufio.NewScanner(strings.NewReader(conf))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		args, err := splitConfLine(sc.Text())
		if err != nil {
			return fmt.Errorf("redis.conf line %d: %w", n, err)
		}
		if len(args) == 0 {
			continue
		}
		st.apply(strings.ToLower(args[0]), args[1:], n)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("redis.conf: %w", err)
	}
	return st.check()
}

type aclUser struct{ on, nopass bool }

type confState struct {
	tlsPort            string
	tlsAuthClients     string
	tlsAuthClientsLine int
	aclFileLine        int
	users              map[string]*aclUser
	userLine           map[string]int
}

func (s *confState) apply(key string, args []string, line int) {
	arg := ""
	if len(args) > 0 {
		arg = args[0]
	}
	switch key {
	case "tls-port":
		s.tlsPort = arg
	case "tls-auth-clients":
		s.tlsAuthClients, s.tlsAuthClientsLine = strings.ToLower(arg), line
	case "aclfile":
		s.aclFileLine = line
	case "requirepass":
		// requirepass sets (or, when empty, clears) the default user's password.
		s.users["default"].nopass = arg == ""
		s.noteUser("default", line)
	case "user":
		if len(args) == 0 {
			return
		}
		u, ok := s.users[args[0]]
		if !ok {
			u = &aclUser{} // a new ACL user starts off, with no password
			s.users[args[0]] = u
		}
		for _, r := range args[1:] {
			switch r = strings.ToLower(r); {
			case r == "on":
				u.on = true
			case r == "off":
				u.on = false
			case r == "nopass":
				u.nopass = true
			case r == "reset":
				u.on, u.nopass = false, false
			case r == "resetpass":
				u.nopass = false
			case strings.HasPrefix(r, ">"), strings.HasPrefix(r, "#"):
				u.nopass = false // a password: nopass is off again
			}
		}
		s.noteUser(args[0], line)
	}
}

func (s *confState) noteUser(name string, line int) {
	if s.userLine == nil {
		s.userLine = map[string]int{}
	}
	s.userLine[name] = line
}

func (s *confState) check() error {
	if s.tlsPort == "" || s.tlsPort == "0" || s.tlsAuthClients == "yes" {
		return nil
	}
	where := "tls-auth-clients " + s.tlsAuthClients
	if s.tlsAuthClientsLine > 0 {
		where += fmt.Sprintf(" (line %d)", s.tlsAuthClientsLine)
	}
	if s.aclFileLine > 0 {
		return fmt.Errorf("%s with an aclfile (line %d) whose users cannot be checked: a TLS client without a certificate could AUTH as a password-less user (redis/redis#14638); use tls-auth-clients yes", where, s.aclFileLine)
	}
	var open []string
	for name, u := range s.users {
		if !u.on || !u.nopass {
			continue
		}
		d := "user " + name
		if l, ok := s.userLine[name]; ok {
			d += " (line " + strconv.Itoa(l) + ")"
		} else if name == "default" {
			d += " (no requirepass)"
		}
		open = append(open, d)
	}
	if len(open) == 0 {
		return nil
	}
	sort.Strings(open)
	return fmt.Errorf("%s with password-less %s: a TLS client without a certificate could AUTH as it (redis/redis#14638); use tls-auth-clients yes",
		where, strings.Join(open, ", "))
}

// splitConfLine splits one redis.conf line into arguments the way Redis
// does for the cases that matter here: blanks separate, "double" quotes
// take Go-style escapes, 'single' quotes none; # starts a comment line.
func splitConfLine(line string) ([]string, error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return nil, nil
	}
	var args []string
	for i := 0; i < len(line); {
		switch line[i] {
		case ' ', '\t':
			i++
		case '"':
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' {
					j++
				}
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unbalanced quotes")
			}
			v, err := strconv.Unquote(line[i : j+1])
			if err != nil {
				return nil, fmt.Errorf("bad quoted argument %s: %w", line[i:j+1], err)
			}
			args = append(args, v)
			i = j + 1
		case '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unbalanced quotes")
			}
			args = append(args, line[i+1:i+1+j])
			i += j + 2
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' {
				j++
			}
			args = append(args, line[i:j])
			i = j
		}
	}
	return args, nil
}
