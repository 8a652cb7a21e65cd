// The editor of the dashboard's Run page: CodeMirror 6 and the languages
// brigade judges, bundled into ../assets/codemirror.js as one global, `CM`.
import { EditorView, basicSetup } from 'codemirror';
import { EditorState, Compartment } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { indentWithTab } from '@codemirror/commands';
import { python } from '@codemirror/lang-python';
import { cpp } from '@codemirror/lang-cpp';
import { java } from '@codemirror/lang-java';
import { oneDark } from '@codemirror/theme-one-dark';

window.CM = { EditorView, EditorState, Compartment, basicSetup, keymap, indentWithTab, python, cpp, java, oneDark };
