package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// stateAnswer is the admin API's state object.
type stateAnswer struct {
	Address string                                `json:"address"`
	State   map[string]map[string]json.RawMessage `json:"state"`
}

func (c *cli) printState(raw []byte, name string) error {
	var st stateAnswer
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("the state answer is not the expected JSON: %v", err)
	}
	if name != "" {
		v, ok := st.State[name]
		if ok && string(v["present"]) == "false" {
			ok = false
		}
		if !ok {
			var set []string
			for _, k := range sortedKeys(st.State) {
				if string(st.State[k]["present"]) != "false" {
					set = append(set, k)
				}
			}
			return fmt.Errorf("%s has no value %q (set: %s)", st.Address, name, strings.Join(set, ", "))
		}
		if c.json {
			b, _ := json.Marshal(v)
			c.printJSON(b)
			return nil
		}
		fmt.Fprintln(c.stdout, valueText(v))
		return nil
	}
	if c.json {
		c.printJSON(raw)
		return nil
	}
	if len(st.State) == 0 {
		fmt.Fprintf(c.stdout, "%s has no state\n", st.Address)
		return nil
	}
	var rows [][]string
	for _, k := range sortedKeys(st.State) {
		var typ string
		_ = json.Unmarshal(st.State[k]["type"], &typ)
		rows = append(rows, []string{k, typ, valueText(st.State[k])})
	}
	c.table([]string{"NAME", "TYPE", "VALUE"}, rows)
	return nil
}

func stateGetCommand() *command {
	return &command{
		path: "state get", args: "ADDRESS [NAME]", min: 1, max: 2,
		summary: "print an instance's durable state, or one value",
		help: `Prints the state of the instance at ADDRESS (namespace/type/id) as the store
holds it once everything durable is applied: a table of NAME, TYPE and VALUE,
or with NAME the value alone. Built-in types are shown decoded, JSON as JSON,
other text as text, other bytes as base64:...

Examples:
  shardfn state get rides/driver/d-17
  shardfn state get rides/driver/d-17 status
  shardfn state get example/greeter/bob --json`,
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			b, err := c.getJSON(c.admin, "/state/"+p, nil)
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return c.printState(b, name)
		},
	}
}

func stateSetCommand() *command {
	return &command{
		path: "state set", args: "ADDRESS NAME VALUE", min: 3, max: 3,
		summary: "repair one state value (written through the log)",
		help: `Sets the state value NAME of the instance at ADDRESS. The write goes through
the log like an invocation's: it is queued at the instance behind its
messages, applied on its shard without invoking the function (remote
functions too), durable when this command returns, and ordered with the
instance's other messages. NAME must be a declared state of the function
type (for remote types: one the endpoint registered).

VALUE is read --as text by default: as a person types it, parsed by the
state's declared type (a string as is; long, int, float, double: a number;
bool: true or false; any other type: the text's bytes). --as json takes JSON
(built-in types in their JSON form, other types store the JSON bytes); --as
b64 takes the stored bytes in base64. VALUE "@path" reads a file, "@-"
standard input. Prints the instance's state afterwards.

Examples:
  shardfn state set example/greeter/bob visits 5
  shardfn state set rides/driver/d-17 status idle
  shardfn state set rides/passenger/p-9 rides 3
  shardfn state set rides/driver/d-17 cell MTItNDA= --as b64
  shardfn state set example/greeter/bob visits @visits.txt`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&stateAs, "as", "text", "how to read VALUE: text, json or b64")
			fs.StringVar(&stateType, "type", "", "the value's type, for remote states registered without one")
		},
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			val, err := c.readBody(args[2])
			if err != nil {
				return err
			}
			in := map[string]any{}
			switch stateAs {
			case "text":
				in["text"] = string(val)
			case "json":
				if !json.Valid(val) {
					return usagef("VALUE is not valid JSON (use --as text for plain text)")
				}
				in["value"] = json.RawMessage(val)
			case "b64":
				in["value_b64"] = strings.TrimSpace(string(val))
			default:
				return usagef("--as %q: use text, json or b64", stateAs)
			}
			if stateType != "" {
				in["type"] = stateType
			}
			body, _ := json.Marshal(in)
			b, _, err := c.do("PUT", c.admin, "/state/"+p+"/"+url.PathEscape(args[1]), "application/json", body)
			if err != nil {
				return err
			}
			return c.printState(b, "")
		},
	}
}

func stateDeleteCommand() *command {
	return &command{
		path: "state delete", args: "ADDRESS NAME", min: 2, max: 2,
		summary: "clear one state value (written through the log)",
		help: `Clears the state value NAME of the instance at ADDRESS, through the log like
'state set' (durable and ordered with the instance's messages when this
command returns). Prints the instance's state afterwards.

Examples:
  shardfn state delete rides/driver/d-17 ride
  shardfn state delete example/greeter/bob visits --json`,
		run: func(c *cli, args []string) error {
			p, err := addressPath(args[0])
			if err != nil {
				return err
			}
			b, _, err := c.do("DELETE", c.admin, "/state/"+p+"/"+url.PathEscape(args[1]), "", nil)
			if err != nil {
				return err
			}
			return c.printState(b, "")
		},
	}
}
