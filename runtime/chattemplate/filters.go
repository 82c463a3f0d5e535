package chattemplate

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

func applyFilter(name string, v any, args []any, kw map[string]any) (any, error) {
	arg := func(i int, key string) (any, bool) {
		if i < len(args) {
			return args[i], true
		}
		a, ok := kw[key]
		return a, ok
	}
	switch name {
	case "length", "count":
		switch x := v.(type) {
		case string:
			return int64(utf8.RuneCountInString(x)), nil
		case []any:
			return int64(len(x)), nil
		case *Dict:
			return int64(len(x.keys)), nil
		case undefined:
			return int64(0), nil
		}
		return nil, fmt.Errorf("length of %s", repr(v))
	case "trim":
		if chars, ok := arg(0, "chars"); ok && chars != nil {
			return strings.Trim(str(v), str(chars)), nil
		}
		return strings.TrimFunc(str(v), unicode.IsSpace), nil
	case "tojson":
		indent := 0
		if a, ok := arg(0, "indent"); ok && a != nil {
			n, ok := a.(int64)
			if !ok {
				return nil, fmt.Errorf("tojson indent %s", repr(a))
			}
			indent = int(n)
		}
		sortKeys := false
		if a, ok := kw["sort_keys"]; ok {
			sortKeys = truthy(a)
		}
		return toJSON(v, indent, sortKeys)
	case "string":
		return str(v), nil
	case "safe", "e", "escape":
		if name != "safe" {
			return nil, fmt.Errorf("the filter %q is not supported", name)
		}
		return v, nil
	case "lower":
		return strings.ToLower(str(v)), nil
	case "upper":
		return strings.ToUpper(str(v)), nil
	case "title":
		return title(str(v)), nil
	case "capitalize":
		return capitalize(str(v)), nil
	case "first", "last":
		var seq []any
		switch x := v.(type) {
		case []any:
			seq = x
		case string:
			for _, r := range x {
				seq = append(seq, string(r))
			}
		}
		if len(seq) == 0 {
			return undefined{name}, nil
		}
		if name == "first" {
			return seq[0], nil
		}
		return seq[len(seq)-1], nil
	case "join":
		sep := ""
		if a, ok := arg(0, "d"); ok {
			sep = str(a)
		}
		l, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("join of %s", repr(v))
		}
		parts := make([]string, len(l))
		for i, e := range l {
			parts[i] = str(e)
		}
		return strings.Join(parts, sep), nil
	case "default", "d":
		def, _ := arg(0, "default_value")
		boolean := false
		if b, ok := arg(1, "boolean"); ok {
			boolean = truthy(b)
		}
		if _, undef := v.(undefined); undef || (boolean && !truthy(v)) {
			if def == nil {
				return "", nil
			}
			return def, nil
		}
		return v, nil
	case "items":
		if m := method(v, "items"); m != nil {
			return m.(callable)(nil, nil)
		}
		return nil, fmt.Errorf("items of %s", repr(v))
	case "list":
		switch x := v.(type) {
		case []any:
			return x, nil
		case string:
			var out []any
			for _, r := range x {
				out = append(out, string(r))
			}
			return out, nil
		case *Dict:
			return method(v, "keys").(callable)(nil, nil)
		}
		return nil, fmt.Errorf("list of %s", repr(v))
	case "reverse":
		switch x := v.(type) {
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[len(x)-1-i] = e
			}
			return out, nil
		case string:
			rs := []rune(x)
			for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
				rs[i], rs[j] = rs[j], rs[i]
			}
			return string(rs), nil
		}
		return nil, fmt.Errorf("reverse of %s", repr(v))
	case "int":
		switch x := v.(type) {
		case int64:
			return x, nil
		case float64:
			return int64(x), nil
		case bool:
			if x {
				return int64(1), nil
			}
			return int64(0), nil
		case string:
			n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			if err != nil {
				return int64(0), nil
			}
			return n, nil
		}
		return int64(0), nil
	case "abs":
		switch x := v.(type) {
		case int64:
			return max(x, -x), nil
		case float64:
			return max(x, -x), nil
		}
		return nil, fmt.Errorf("abs of %s", repr(v))
	case "replace":
		if len(args) < 2 {
			return nil, fmt.Errorf("replace needs two arguments")
		}
		return strings.ReplaceAll(str(v), str(args[0]), str(args[1])), nil
	case "selectattr", "rejectattr":
		l, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%s of %s", name, repr(v))
		}
		if len(args) == 0 {
			return nil, fmt.Errorf("%s needs an attribute", name)
		}
		attr := str(args[0])
		var out []any
		for _, e := range l {
			val := getAttr(e, attr)
			keep := truthy(val)
			if len(args) > 1 {
				var err error
				if keep, err = applyTest(str(args[1]), val, args[2:]); err != nil {
					return nil, err
				}
			}
			if keep == (name == "selectattr") {
				out = append(out, e)
			}
		}
		return out, nil
	case "map":
		l, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("map of %s", repr(v))
		}
		attr, ok := kw["attribute"]
		if !ok {
			return nil, fmt.Errorf("map is supported with attribute= only")
		}
		out := make([]any, len(l))
		for i, e := range l {
			out[i] = getAttr(e, str(attr))
		}
		return out, nil
	}
	return nil, fmt.Errorf("the filter %q is not supported by moec's chat templates", name)
}

func applyTest(name string, v any, args []any) (bool, error) {
	_, undef := v.(undefined)
	switch name {
	case "defined":
		return !undef, nil
	case "undefined":
		return undef, nil
	case "none":
		return v == nil, nil
	case "string":
		_, ok := v.(string)
		return ok, nil
	case "number":
		switch v.(type) {
		case int64, float64:
			return true, nil
		}
		return false, nil
	case "integer":
		_, ok := v.(int64)
		return ok, nil
	case "float":
		_, ok := v.(float64)
		return ok, nil
	case "boolean":
		_, ok := v.(bool)
		return ok, nil
	case "true":
		b, ok := v.(bool)
		return ok && b, nil
	case "false":
		b, ok := v.(bool)
		return ok && !b, nil
	case "mapping":
		_, ok := v.(*Dict)
		return ok, nil
	case "sequence", "iterable":
		switch v.(type) {
		case []any, string, *Dict:
			return true, nil
		}
		return false, nil
	case "equalto", "eq", "==", "sameas":
		if len(args) == 0 {
			return false, fmt.Errorf("the test %q needs an argument", name)
		}
		return equal(v, args[0]), nil
	case "ne", "!=":
		if len(args) == 0 {
			return false, fmt.Errorf("the test %q needs an argument", name)
		}
		return !equal(v, args[0]), nil
	case "in":
		if len(args) == 0 {
			return false, fmt.Errorf("the test in needs an argument")
		}
		return contains(args[0], v)
	case "odd", "even":
		n, ok := v.(int64)
		if !ok {
			return false, fmt.Errorf("%s of %s", name, repr(v))
		}
		return (n%2 != 0) == (name == "odd"), nil
	}
	return false, fmt.Errorf("the test %q is not supported by moec's chat templates", name)
}
