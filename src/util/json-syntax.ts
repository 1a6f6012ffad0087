// The characters of JSON's syntax that a scan of its structure looks at (strings, escapes,
// nesting, members): the same values as bytes of UTF-8 and as UTF-16 units, all ASCII.
export const QUOTE = 0x22;
export const BACKSLASH = 0x5c;
export const OPEN_OBJECT = 0x7b;
export const CLOSE_OBJECT = 0x7d;
export const OPEN_ARRAY = 0x5b;
export const CLOSE_ARRAY = 0x5d;
export const COMMA = 0x2c;
export const COLON = 0x3a;
